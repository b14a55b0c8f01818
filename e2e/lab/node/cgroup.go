package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroupRoot is where the host mounts its cgroup v1 hierarchies.
const cgroupRoot = "/sys/fs/cgroup"

// hierarchies lists the mounted cgroup v1 hierarchies (cpu, memory, pids, name=systemd,
// …): a node's cgroup exists in each, as the kubelet's cgroupfs driver expects.
func hierarchies() []string { return mountedCgroups(false) }

// allHierarchies adds the cgroup v2 hierarchy a hybrid host mounts beside them
// (/sys/fs/cgroup/unified), where runc also creates each container's cgroup.
func allHierarchies() []string { return mountedCgroups(true) }

func mountedCgroups(v2 bool) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		// mountinfo: ... mount-point ... - fstype source options
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(fields) || !(fields[sep+1] == "cgroup" || v2 && fields[sep+1] == "cgroup2") {
			continue
		}
		if mp := fields[4]; strings.HasPrefix(mp, cgroupRoot+"/") {
			out = append(out, mp)
		}
	}
	sort.Strings(out)
	return out
}

// makeCgroups creates NAME and NAME/system in every hierarchy. cpuset cgroups start
// with no CPUs or memory nodes, so they inherit their parent's.
func makeCgroups(name string) error {
	hs := hierarchies()
	if len(hs) == 0 {
		return errors.New("no cgroup v1 hierarchy under " + cgroupRoot)
	}
	for _, h := range hs {
		for _, rel := range []string{name, filepath.Join(name, "system")} {
			dir := filepath.Join(h, rel)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("cgroup %s: %w", dir, err)
			}
			if filepath.Base(h) != "cpuset" {
				continue
			}
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				b, err := os.ReadFile(filepath.Join(filepath.Dir(dir), f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
					return fmt.Errorf("cgroup %s: %w", filepath.Join(dir, f), err)
				}
			}
		}
	}
	return nil
}

// pids lists every process in the cgroup NAME and below, from the pids hierarchy (or
// any other when there is none).
func pids(name string) []int {
	var out []int
	seen := map[int]bool{}
	for _, h := range allHierarchies() {
		_ = filepath.WalkDir(filepath.Join(h, name), func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			if err != nil {
				return nil
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
					seen[pid] = true
					out = append(out, pid)
				}
			}
			return nil
		})
	}
	return out
}

// killCgroup sends SIGKILL to every process in the cgroup tree until none is left.
func killCgroup(ctx context.Context, name string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		ps := pids(name)
		if len(ps) == 0 {
			return nil
		}
		for _, pid := range ps {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s: %d processes survive SIGKILL: %v", name, len(ps), ps)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// removeCgroups removes the cgroup tree NAME in every hierarchy, deepest first.
func removeCgroups(name string) error {
	var errs []error
	for _, h := range allHierarchies() {
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(h, name), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// CleanCgroups kills the processes of, and removes, every cgroup tree whose name
// starts with prefix: what a killed lab left behind.
func CleanCgroups(ctx context.Context, prefix string) error {
	names := map[string]bool{}
	for _, h := range allHierarchies() {
		entries, _ := os.ReadDir(h)
		for _, e := range entries {
			if e.IsDir() && strings.HasPrefix(e.Name(), prefix) {
				names[e.Name()] = true
			}
		}
	}
	var errs []error
	for name := range names {
		errs = append(errs, killCgroup(ctx, name), removeCgroups(name))
	}
	return errors.Join(errs...)
}
