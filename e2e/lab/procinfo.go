package lab

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Process is one process the lab runs.
type Process struct {
	// Name is cluster/component, or cluster/pod/container for the kubelet-lite's.
	Name string
	PID  int
	// Netns is the network namespace it runs in.
	Netns string
}

// Processes lists the lab's running processes: control planes, kube-proxies,
// components run by the kubelet-lite and workload servers.
func (l *Lab) Processes() []Process {
	var out []Process
	add := func(p *proc) {
		if p != nil && !p.exited() {
			out = append(out, Process{Name: p.name, PID: p.pid(), Netns: p.netns})
		}
	}
	for _, c := range l.clusters {
		for _, p := range c.procs.all() {
			add(p)
		}
		if c.kubelet != nil {
			for _, lp := range c.kubelet.all() {
				lp.mu.Lock()
				for _, st := range lp.containers {
					add(st.proc)
				}
				lp.mu.Unlock()
			}
		}
	}
	for _, p := range l.procs.all() {
		add(p)
	}
	return out
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
