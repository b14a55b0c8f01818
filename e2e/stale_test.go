package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mcnet-io/mcnet/e2e/lab"
	"github.com/mcnet-io/mcnet/e2e/lab/labtest"
)

// staleChildEnv makes the test binary a lab owner that the parent kills.
const staleChildEnv = "MCNET_LAB_STALE_CHILD"

// TestCleanStale kills a process owning a running lab with SIGKILL (no cleanup runs)
// and checks that the next CleanStale removes its namespaces, processes and directory.
func TestCleanStale(t *testing.T) {
	if os.Getenv(staleChildEnv) != "" {
		staleChild()
		return
	}
	labtest.RequireRoot(t)
	ctx := t.Context()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run", "^TestCleanStale$")
	cmd.Env = append(os.Environ(), staleChildEnv+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var runID, dir string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "lab %s %s", &runID, &dir); err == nil {
			break
		}
	}
	if runID == "" {
		_ = cmd.Process.Kill()
		t.Fatalf("child did not start a lab: %v", cmd.Wait())
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()

	prefix := lab.Prefix + runID + "-"
	if got := netnsWithPrefix(t, prefix); len(got) == 0 {
		t.Fatalf("no namespaces of killed lab %s left to clean: the test proves nothing", runID)
	}
	if err := lab.CleanStale(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if got := netnsWithPrefix(t, prefix); len(got) > 0 {
		t.Errorf("namespaces left after CleanStale: %v", got)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("lab dir %s left after CleanStale (%v)", dir, err)
	}
	// The killed lab's nodes ran containerd, shims and a pod: their cgroups, mount
	// namespaces and processes must be gone too.
	assertNodesGone(t, runID)
}

func staleChild() {
	l, err := lab.Start(context.Background(), lab.Options{Clusters: []lab.ClusterOptions{{Name: "stale"}}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// A pod, so the node runs shims and containers that a cleanup must find.
	if _, err := l.AddPod(context.Background(), l.Clusters()[0].Workers()[0], lab.PodOptions{Name: "sleeper"}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("lab %s %s\n", l.RunID, l.Dir)
	time.Sleep(time.Hour) // until the parent kills it
}

func netnsWithPrefix(t *testing.T, prefix string) []string {
	t.Helper()
	ents, err := os.ReadDir("/run/netns")
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// assertNodesGone checks that no cgroup, mount or process of a run's nodes remains.
func assertNodesGone(t *testing.T, runID string) {
	t.Helper()
	prefix := lab.Prefix + runID + "-"
	if cg, _ := filepath.Glob("/sys/fs/cgroup/*/" + prefix + "*"); len(cg) > 0 {
		t.Errorf("cgroups left behind: %v", cg)
	}
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err != nil {
		t.Fatal(err)
	} else if strings.Contains(string(mi), "/run/mcnet-lab/"+runID) {
		t.Errorf("mounts of /run/mcnet-lab/%s left behind", runID)
	}
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range cmdlines {
		if b, err := os.ReadFile(f); err == nil && strings.Contains(string(b), "/run/mcnet-lab/"+runID) {
			t.Errorf("process %s left behind: %q", filepath.Dir(f), strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
}
