package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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

// BenchmarkPodReady measures what a user waits for on the lab's real nodes: from
// creating a Deployment of two replicas (the network-tools image, already on the
// nodes) to both pods Ready, over repeated trials, p50 and p99.
func BenchmarkPodReady(b *testing.B) {
	labtest.RequireRoot(b)
	l := labtest.Start(b, lab.Options{Clusters: []lab.ClusterOptions{{Name: "one"}}})
	c := l.Clusters()[0]
	const trials = 7
	for b.Loop() {
		var samples []time.Duration
		for i := range trials {
			name := fmt.Sprintf("web%d", i)
			y := fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %s, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: %s}}
  template:
    metadata: {labels: {app: %s}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - {name: main, image: %s, command: [sleep, infinity]}
`, name, name, name, l.Images().NetTools)
			start := time.Now()
			if err := c.ApplyYAML(b.Context(), []byte(y)); err != nil {
				b.Fatal(err)
			}
			err := lab.Eventually(b.Context(), time.Minute, func(ctx context.Context) error {
				d, err := c.Client.AppsV1().Deployments("default").Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					return err
				}
				if d.Status.ReadyReplicas != 2 {
					return fmt.Errorf("%d/2 ready", d.Status.ReadyReplicas)
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			samples = append(samples, time.Since(start))
			if err := c.Client.AppsV1().Deployments("default").Delete(b.Context(), name, metav1.DeleteOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		p50, p99 := percentiles(samples)
		b.ReportMetric(p50.Seconds(), "s/ready-p50")
		b.ReportMetric(p99.Seconds(), "s/ready-p99")
		b.Logf("Deployment of 2 to Ready over %d trials: p50 %s, p99 %s (%v)", trials, p50.Round(time.Millisecond), p99.Round(time.Millisecond), samples)
	}
}

// percentiles returns the median and the 99th percentile (nearest rank) of samples.
func percentiles(samples []time.Duration) (p50, p99 time.Duration) {
	s := append([]time.Duration(nil), samples...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return rank(0.50), rank(0.99)
}
