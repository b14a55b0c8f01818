package packaging

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkImages builds the lab's images the way `make image` does (reusing what did
// not change, so a second run times the cached path) and reports what a node pulls per
// image: the index, manifests, configs and compressed layers.
func BenchmarkImages(b *testing.B) {
	root, err := filepath.Abs("../..")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		start := time.Now()
		images, err := LabImages(b.Context(), root)
		if err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		b.StopTimer()
		for _, img := range images {
			mb := float64(img.Size) / 1e6
			fmt.Printf("images: %-10s %6.1f MB to pull (%s)\n", img.Name, mb, img.Refs[0])
			b.ReportMetric(mb, img.Name+"-MB")
		}
		fmt.Printf("images: %d built or reused in %s\n", len(images), took.Round(100*time.Millisecond))
		b.ReportMetric(took.Seconds(), "s/build")
		b.StartTimer()
	}
}
