package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mcnet-io/mcnet/e2e/lab/network"
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
	out, err := network.Output(ctx, "ip", "netns", "list")
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
		errs = append(errs, network.RemoveNetns(ctx, names))
		errs = append(errs, removeRunDir(filepath.Join(stateDir, id)))
		if rerr == nil && o.Dir != "" && strings.Contains(filepath.Base(o.Dir), "mcnet-lab") {
			errs = append(errs, os.RemoveAll(o.Dir))
		}
		errs = append(errs, removeOwner(id))
	}
	return errors.Join(errs...)
}
