package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
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
}

func staleChild() {
	l, err := lab.Start(context.Background(), lab.Options{Clusters: []lab.ClusterOptions{{Name: "stale"}}})
	if err != nil {
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
