package main

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPause runs the built command: it keeps running, reaps a child that exits, and exits
// 0 on SIGTERM and on SIGINT.
func TestPause(t *testing.T) {
	bin := t.TempDir() + "/pause"
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		cmd := exec.Command(bin)
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Signal only once it says it catches signals.
		line, err := bufio.NewReader(stderr).ReadString('\n')
		if err != nil || strings.TrimSpace(line) != ready {
			t.Fatalf("pause printed %q (%v), want %q", line, err, ready)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("after %v: %v, want exit status 0", sig, err)
			}
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatalf("pause did not exit on %v", sig)
		}
	}
	if out, err := exec.Command(bin, "x").CombinedOutput(); err == nil || !strings.Contains(string(out), "no arguments") {
		t.Errorf("pause x: %v %s, want a usage error", err, out)
	}
}

// TestReap checks that reap collects an exited child of this process (a zombie until
// someone waits for it).
func TestReap(t *testing.T) {
	p, err := os.StartProcess("/bin/true", []string{"true"}, &os.ProcAttr{})
	if err != nil {
		t.Skip("no /bin/true:", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		reap()
		// Once reaped, the pid no longer exists for wait.
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(p.Pid, &ws, syscall.WNOHANG, nil); err == syscall.ECHILD {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("child %d was not reaped", p.Pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
