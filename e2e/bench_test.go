package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mcnet-io/mcnet/e2e/fleetlab"
	"github.com/mcnet-io/mcnet/e2e/lab"
	"github.com/mcnet-io/mcnet/e2e/lab/labtest"
	"github.com/mcnet-io/mcnet/internal/fleet"
)

// BenchmarkLabStartup brings up a three-cluster lab (two nodes each, one cluster behind
// NAT) and reports the time until every API server, node and kube-proxy is ready, and
// the resident memory of the lab's processes by component. `make bench` runs it once.
func BenchmarkLabStartup(b *testing.B) {
	labtest.RequireRoot(b)
	opts := lab.Options{Clusters: []lab.ClusterOptions{{Name: "one"}, {Name: "two"}, {Name: "three", BehindNAT: true}}}
	for b.Loop() {
		start := time.Now()
		l, err := lab.Start(b.Context(), opts)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		took := time.Since(start)
		total, breakdown := memory(l)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		stopStart := time.Now()
		err = l.Stop(ctx)
		stopTook := time.Since(stopStart)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(took.Seconds(), "s/start")
		b.ReportMetric(stopTook.Seconds(), "s/stop")
		b.ReportMetric(float64(total)/(1<<20), "MiB-rss")
		b.Logf("3 clusters up in %s, down in %s; RSS %.0f MiB:%s", took.Round(time.Millisecond), stopTook.Round(time.Millisecond), float64(total)/(1<<20), breakdown)
		b.StartTimer()
	}
}

// BenchmarkLabFleetReady brings up the example fleet the way `make lab` does and
// reports the time until every mcnet component runs and every gateway reports its
// connections up, and the memory of everything, mcnet's processes included.
func BenchmarkLabFleetReady(b *testing.B) {
	labtest.RequireRoot(b)
	root, err := lab.RepoRoot("")
	if err != nil {
		b.Fatal(err)
	}
	cs, err := fleet.Load(filepath.Join(root, "examples", "fleet.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	opts, err := fleetlab.LabOptions(cs, 2)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		start := time.Now()
		l, err := lab.Start(b.Context(), opts)
		if err != nil {
			b.Fatal(err)
		}
		labUp := time.Since(start)
		err = fleetlab.Install(b.Context(), l, cs, filepath.Join(b.TempDir(), "fleet-repo"))
		if err == nil {
			err = fleetlab.Wait(b.Context(), l, 2*time.Minute)
		}
		ready := time.Since(start)
		b.StopTimer()
		total, breakdown := memory(l)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		serr := l.Stop(ctx)
		cancel()
		if err != nil || serr != nil {
			b.Fatal(err, serr)
		}
		b.ReportMetric(labUp.Seconds(), "s/lab")
		b.ReportMetric(ready.Seconds(), "s/components-ready")
		b.ReportMetric(float64(total)/(1<<20), "MiB-rss")
		b.Logf("%d clusters: lab in %s, mcnet components ready in %s; RSS %.0f MiB:%s", len(opts.Clusters), labUp.Round(time.Millisecond), ready.Round(time.Millisecond), float64(total)/(1<<20), breakdown)
		b.StartTimer()
	}
}

// memory sums the resident memory of the lab's processes, in total and by component.
func memory(l *lab.Lab) (int64, string) {
	byComponent := map[string]int64{}
	var total int64
	for _, p := range l.Processes() {
		rss, err := lab.RSS(p.PID)
		if err != nil {
			continue
		}
		// "one/kube-proxy" → "kube-proxy"; "one/mcnet-gateway-one-gw1/gateway" → "gateway"
		parts := strings.Split(p.Name, "/")
		byComponent[parts[len(parts)-1]] += rss
		total += rss
	}
	comps := make([]string, 0, len(byComponent))
	for c := range byComponent {
		comps = append(comps, c)
	}
	sort.Strings(comps)
	var sb strings.Builder
	for _, c := range comps {
		fmt.Fprintf(&sb, " %s=%.0fMiB", c, float64(byComponent[c])/(1<<20))
	}
	return total, sb.String()
}
