package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mcnet-io/mcnet/e2e/lab"
	"github.com/mcnet-io/mcnet/e2e/lab/labtest"
)

// BenchmarkLabStartup brings up a three-cluster lab (two nodes each, one cluster behind
// NAT) and reports the time until every API server, node and kube-proxy is ready, and
// the resident memory of the lab's processes by component. `make bench` runs it once.
func BenchmarkLabStartup(b *testing.B) {
	labtest.RequireRoot(b)
	opts := lab.Options{Clusters: []lab.ClusterOptions{{Name: "one"}, {Name: "two"}, {Name: "three", BehindNAT: true}}}
	for b.Loop() {
		b.StopTimer()
		start := time.Now()
		b.StartTimer()
		l, err := lab.Start(b.Context(), opts)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		took := time.Since(start)
		byComponent := map[string]int64{}
		var total int64
		for _, p := range l.Processes() {
			rss, err := lab.RSS(p.PID)
			if err != nil {
				continue
			}
			// "one/kube-proxy" → "kube-proxy"
			_, comp, _ := strings.Cut(p.Name, "/")
			byComponent[comp] += rss
			total += rss
		}
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
		comps := make([]string, 0, len(byComponent))
		for c := range byComponent {
			comps = append(comps, c)
		}
		sort.Strings(comps)
		var sb strings.Builder
		for _, c := range comps {
			fmt.Fprintf(&sb, " %s=%.0fMiB", c, float64(byComponent[c])/(1<<20))
		}
		b.Logf("3 clusters up in %s, down in %s; RSS %.0f MiB:%s", took.Round(time.Millisecond), stopTook.Round(time.Millisecond), float64(total)/(1<<20), sb.String())
		b.StartTimer()
	}
}
