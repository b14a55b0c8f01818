package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcnet-io/mcnet/e2e/lab/node"
)

// CleanStale removes what labs of dead processes left behind: processes in their
// namespaces, the namespaces, their directories and owner records. Labs whose owner
// still runs (another test, another engineer's `make lab`) are left alone. progress may
// be nil.
func CleanStale(ctx context.Context, progress io.Writer) error {
	return clean(ctx, progress, func(o owner, ok bool) bool { return !ok || !o.alive() })
}

// CleanAll removes every lab, asking live owners started by mcnet-lab to stop first;
// labs owned by other processes (running tests) are left alone.
func CleanAll(ctx context.Context, progress io.Writer) error {
	return clean(ctx, progress, func(o owner, ok bool) bool {
		if !ok || !o.alive() {
			return true
		}
		if o.Command != "mcnet-lab" {
			return false
		}
		// The owner cleans up itself on SIGTERM; give it time, then take over.
		_ = syscall.Kill(o.PID, syscall.SIGTERM)
		deadline := time.Now().Add(30 * time.Second)
		for o.alive() && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond) // polling a foreign process; nothing to wait on
		}
		return true
	})
}

func clean(ctx context.Context, progress io.Writer, stale func(owner, bool) bool) error {
	byRun := map[string][]string{}
	out, err := output(ctx, "ip", "netns", "list")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if id := runIDOf(f[0]); id != "" {
			byRun[id] = append(byRun[id], f[0])
		}
	}
	// Owner records without namespaces still have a directory to remove.
	if ents, err := os.ReadDir(stateDir); err == nil {
		for _, e := range ents {
			id, ok := strings.CutSuffix(e.Name(), ".json")
			if !ok && e.IsDir() {
				id, ok = e.Name(), true
			}
			if ok {
				if _, seen := byRun[id]; !seen {
					byRun[id] = nil
				}
			}
		}
	}
	var errs []error
	for id, names := range byRun {
		o, rerr := readOwner(id)
		if !stale(o, rerr == nil) {
			continue
		}
		if progress != nil {
			fmt.Fprintf(progress, "removing lab %s (%d namespaces)\n", id, len(names))
		}
		// A node's processes first (containerd's shims and containers are not all in
		// its network namespace's sight), then its mount namespace and sockets.
		errs = append(errs, node.CleanCgroups(ctx, Prefix+id+"-"))
		errs = append(errs, removeNetns(ctx, names))
		errs = append(errs, removeRunDir(filepath.Join(stateDir, id)))
		if rerr == nil && o.Dir != "" && strings.Contains(filepath.Base(o.Dir), "mcnet-lab") {
			errs = append(errs, os.RemoveAll(o.Dir))
		}
		errs = append(errs, removeOwner(id))
	}
	return errors.Join(errs...)
}

// removeNetns kills every process left in the namespaces, then deletes them. A
// namespace lives on while a process uses it, with its addresses and routes.
func removeNetns(ctx context.Context, names []string) error {
	if len(names) == 0 {
		return nil
	}
	type key struct{ dev, ino uint64 }
	want := map[key]bool{}
	for _, n := range names {
		var st unix.Stat_t
		if err := unix.Stat(netnsPath(n), &st); err == nil {
			want[key{st.Dev, st.Ino}] = true
		}
	}
	ents, _ := os.ReadDir("/proc")
	var killed []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil {
			continue
		}
		if want[key{st.Dev, st.Ino}] {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			killed = append(killed, pid)
		}
	}
	// Wait for the kills to land so the namespaces really go away.
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range killed {
		for time.Now().Before(deadline) {
			if _, err := procStartTime(pid); err != nil {
				break
			}
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); strings.Contains(string(b), ") Z ") {
				break // a zombie holds no namespace
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	var lines []string
	for _, n := range names {
		if _, err := os.Stat(netnsPath(n)); err == nil {
			lines = append(lines, "netns del "+n)
		}
	}
	// -force keeps the batch going when one namespace fails.
	if len(lines) == 0 {
		return nil
	}
	if err := ipBatchForce(ctx, lines); err != nil {
		return fmt.Errorf("delete namespaces: %w", err)
	}
	return nil
}

func ipBatchForce(ctx context.Context, lines []string) error {
	return runStdin(ctx, strings.Join(lines, "\n")+"\n", "ip", "-force", "-batch", "-")
}
