// Package proc runs the lab's long-running processes (control planes, kube-proxy,
// workload servers) inside network namespaces, each with its own log file, and stops
// them in reverse start order so dependants go before what they depend on.
package proc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is one long-running process inside a network namespace.
type Process struct {
	name    string // for logs and errors, e.g. "east/kube-apiserver"
	netns   string
	logPath string

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // exit status, valid after done
}

// Start starts argv inside netns with stdout and stderr appended to logPath.
// `ip netns exec` execs the program in place, so cmd.Process.Pid is the real process
// and signals reach it directly.
func Start(name, netns, logPath string, env []string, argv ...string) (*Process, error) {
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== %s start: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(argv, " "))

	cmd := exec.Command("ip", append([]string{"netns", "exec", netns}, argv...)...)
	if filepath.IsAbs(netns) { // a pod's namespace, /proc/PID/ns/net
		cmd = exec.Command("nsenter", append([]string{"--net=" + netns, "--"}, argv...)...)
	}
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own process group: a terminal's Ctrl-C reaches only the lab, which then stops
		// everything in order (API server before etcd).
		Setpgid: true,
		// If the lab process dies hard, its processes die with it; the namespaces
		// they leave are removed by the next CleanStale.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{name: name, netns: netns, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Name is what Start was given, e.g. "east/kube-apiserver".
func (p *Process) Name() string { return p.name }

// Netns is the network namespace it runs in.
func (p *Process) Netns() string { return p.netns }

// PID is the process id of the program itself.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process, ignoring a process that already ended.
func (p *Process) Signal(sig syscall.Signal) {
	if !p.Exited() {
		_ = p.cmd.Process.Signal(sig)
	}
}

// Stop asks the process to end with SIGTERM and kills it when grace runs out.
func (p *Process) Stop(ctx context.Context, grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	p.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	p.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("stop %s (pid %d): still running after SIGKILL", p.name, p.PID())
	}
}

// ExitError waits for the process to end and explains its exit with the end of its
// log, the only place that says why.
func (p *Process) ExitError() error {
	<-p.done
	return fmt.Errorf("%s exited (%v); end of %s:\n%s", p.name, p.err, p.logPath, Tail(p.logPath, 20))
}

// Tail returns the last n lines of a file, for error messages and failure dumps.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Set stops processes in reverse start order, so dependants stop before what they
// depend on (kube-proxy and the controller manager before the API server before etcd).
type Set struct {
	mu    sync.Mutex
	procs []*Process
}

// Add records a started process.
func (s *Set) Add(p *Process) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.procs = append(s.procs, p)
}

// StopAll stops every process, the last started first, and forgets them.
func (s *Set) StopAll(ctx context.Context) error {
	s.mu.Lock()
	procs := s.procs
	s.procs = nil
	s.mu.Unlock()
	var errs []error
	for i := len(procs) - 1; i >= 0; i-- {
		if err := procs[i].Stop(ctx, 5*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// All lists the recorded processes in start order.
func (s *Set) All() []*Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Process(nil), s.procs...)
}
