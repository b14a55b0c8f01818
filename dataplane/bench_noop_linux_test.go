package dataplane

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// BenchmarkNoOpApply measures what a gateway pays every time it re-applies an
// unchanged State (each resync, each unrelated Endpoint change): processes started
// and time per Apply, counted by the kernel's process connector and timed around the
// helper's reply. With MCNET_BENCH_BASELINE=<git revision> (make bench sets it to the
// last revision with the iptables filter) it builds the dataplane tests of that
// revision and runs the same measurement with them in the same lab, and prints both,
// e.g.
//
//	dataplane no-op Apply before (0caa576): 16.0 execs/op 40.12 ms/op
//	dataplane no-op Apply after: 0.0 execs/op 0.31 ms/op
//
// Time per op includes one JSON round trip over a pipe to the helper (tens of µs).
func BenchmarkNoOpApply(b *testing.B) {
	requireRoot(b)
	iters := 50
	if s, err := strconv.Atoi(os.Getenv("MCNET_BENCH_NOOP_APPLIES")); err == nil && s > 0 {
		iters = s
	}
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	type run struct {
		label          string
		exe            string
		execs, msPerOp float64
	}
	runs := []*run{}
	if rev := os.Getenv("MCNET_BENCH_BASELINE"); rev != "" {
		runs = append(runs, &run{label: "before (" + rev[:min(7, len(rev))] + ")", exe: buildBaseline(b, rev)})
	} else {
		fmt.Println("dataplane no-op Apply before: skipped (set MCNET_BENCH_BASELINE to a git revision)")
	}
	runs = append(runs, &run{label: "after", exe: self})

	forks := newForkWatcher(b)
	for range b.N { // -benchtime 1x: one pass; the loop below makes the figures
		l := newLab(b)
		states := l.states(DriverVXLAN, Key{}, Key{})
		for _, r := range runs {
			n := l.startHelper("gwa", r.exe, helperConfig{LinkPrefix: l.prefix["gwa"], StateDir: b.TempDir()})
			if _, err := n.call(helperRequest{Op: "apply", State: states["gwa"]}); err != nil {
				b.Fatal(err)
			}
			var elapsed time.Duration
			execs := forks.count(b, n.cmd.Process.Pid, func() {
				start := time.Now()
				for range iters {
					if _, err := n.call(helperRequest{Op: "apply", State: states["gwa"]}); err != nil {
						b.Fatal(err)
					}
				}
				elapsed = time.Since(start)
			})
			r.execs = float64(execs) / float64(iters)
			r.msPerOp = float64(elapsed.Microseconds()) / 1000 / float64(iters)
			if _, err := n.call(helperRequest{Op: "cleanup"}); err != nil {
				b.Fatal(err)
			}
			n.stop()
		}
	}
	for _, r := range runs {
		fmt.Printf("dataplane no-op Apply %s: %.1f execs/op %.2f ms/op\n", r.label, r.execs, r.msPerOp)
	}
	after := runs[len(runs)-1]
	b.ReportMetric(after.execs, "execs/op")
	b.ReportMetric(after.msPerOp, "ms/op")
	if len(runs) == 2 {
		b.ReportMetric(runs[0].execs, "before-execs/op")
		b.ReportMetric(runs[0].msPerOp, "before-ms/op")
	}
}

// buildBaseline compiles the dataplane test binary of a git revision, whose
// TestHelperProcess speaks the same protocol (apply, cleanup), into a temporary
// directory.
func buildBaseline(b *testing.B, rev string) string {
	b.Helper()
	dir := b.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		b.Fatal(err)
	}
	archive := exec.Command("sh", "-c", `git -C .. archive "$1" | tar -x -C "$2"`, "sh", rev, src)
	if out, err := archive.CombinedOutput(); err != nil {
		b.Fatalf("git archive %s: %v\n%s", rev, err, out)
	}
	exe := filepath.Join(dir, "dataplane.test")
	build := exec.Command("go", "test", "-c", "-o", exe, "./dataplane")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build dataplane tests of %s: %v\n%s", rev, err, out)
	}
	return exe
}
