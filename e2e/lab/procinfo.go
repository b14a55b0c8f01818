package lab

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/mcnet-io/mcnet/e2e/lab/proc"
)

// Process is one process the lab runs.
type Process struct {
	// Name is cluster/component, or cluster/node/command for what runs on a node.
	Name string
	PID  int
	// Netns is the network namespace it runs in.
	Netns string
}

// Processes lists the lab's own running processes: control planes, kube-proxies,
// every node's containerd and kubelet, everything running in a node's cgroup (shims
// and containers) and workload servers.
func (l *Lab) Processes() []Process {
	var out []Process
	add := func(p *proc.Process) {
		if p != nil && !p.Exited() {
			out = append(out, Process{Name: p.Name(), PID: p.PID(), Netns: p.Netns()})
		}
	}
	for _, c := range l.clusters {
		for _, p := range c.processes() {
			add(p)
		}
		for _, n := range c.Nodes {
			if n.runtime == nil {
				continue
			}
			for _, pid := range n.runtime.PIDs() {
				out = append(out, Process{Name: c.Name + "/" + n.Name + "/" + procComm(pid), PID: pid, Netns: n.Netns})
			}
		}
	}
	for _, p := range l.procs.All() {
		add(p)
	}
	return out
}

// procComm is a process's command name, from /proc/PID/comm.
func procComm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// procState is the state letter of /proc/PID/stat (R, S, Z, …).
func procState(pid int) (byte, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0, fmt.Errorf("pid %d: malformed stat", pid)
	}
	return b[i+2], nil
}

// RSS returns a process's resident set size in bytes, from /proc/PID/status.
func RSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}
