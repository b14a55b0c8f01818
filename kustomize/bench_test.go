package kustomize

import (
	"fmt"
	"testing"
	"time"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

// fleetOf returns a valid fleet of n clusters with disjoint networks.
func fleetOf(n int) *mcnetv1.ClusterSet {
	cs := &mcnetv1.ClusterSet{}
	cs.Name = "scale"
	cs.Spec.Broker = mcnetv1.BrokerSpec{Cluster: "c000", Server: "https://broker.example.com:6443"}
	for i := range n {
		cs.Spec.Clusters = append(cs.Spec.Clusters, mcnetv1.ClusterSpec{
			Name:         fmt.Sprintf("c%03d", i),
			PodCIDRs:     []string{fmt.Sprintf("10.%d.%d.0/22", i/64, (i%64)*4)},
			ServiceCIDRs: []string{fmt.Sprintf("172.%d.%d.0/22", 16+i/64, (i%64)*4)},
		})
	}
	return cs
}

// BenchmarkRender100Clusters renders a 100-cluster fleet (defaulting and validation included: Render does both) and writes
// it to disk, printing the time against the 1 s target.
func BenchmarkRender100Clusters(b *testing.B) {
	cs := fleetOf(100)
	var total, inMemory time.Duration
	var files int
	for b.Loop() {
		start := time.Now()
		tree, err := Render(cs, Options{Version: "v0.0.0"})
		if err != nil {
			b.Fatal(err)
		}
		inMemory += time.Since(start)
		if err := Write(b.TempDir(), tree); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		files = len(tree)
	}
	n := time.Duration(b.N)
	b.ReportMetric(float64((total/n).Microseconds())/1000, "ms/render")
	fmt.Printf("render 100-cluster fleet (%d files): %.0f ms validate+render+write (target < 1000 ms, ratio to target %.2f); %.0f ms of it validate+render in memory\n",
		files, ms(total/n), ms(total/n)/1000, ms(inMemory/n))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
