package network

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// Path is where `ip netns add` bind-mounts named namespaces.
// A name that is already a path (a pod's /proc/PID/ns/net) is returned as it is.
func Path(name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	return filepath.Join("/run/netns", name)
}

// Do runs fn on an OS thread switched into the named network namespace. Sockets
// created by fn stay in that namespace after the thread switches back, which is how
// the lab dials and listens inside namespaces without touching the host's network.
func Do(name string, fn func() error) error {
	target, err := os.Open(Path(name))
	if err != nil {
		return fmt.Errorf("open netns %s: %w", name, err)
	}
	defer target.Close()

	runtime.LockOSThread()
	self, err := os.Open(fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open own netns: %w", err)
	}
	defer self.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", name, err)
	}
	fnErr := fn()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread is stuck in the wrong namespace: keep it locked so the runtime
		// discards it when this goroutine ends instead of reusing it.
		return fmt.Errorf("leave netns %s: %w", name, err)
	}
	runtime.UnlockOSThread()
	return fnErr
}

// DialIn opens a TCP (or UDP) connection from inside the named namespace.
func DialIn(ctx context.Context, netns, network, addr string) (net.Conn, error) {
	var d net.Dialer
	var conn net.Conn
	// The socket is created and connected before Do returns; DialContext does
	// both on the calling thread, the connect merely waits through the poller.
	err := Do(netns, func() error {
		var err error
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s %s in %s: %w", network, addr, netns, err)
	}
	return conn, nil
}

// ListenIn opens a TCP listener inside the named namespace.
func ListenIn(ctx context.Context, netns, network, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	var l net.Listener
	err := Do(netns, func() error {
		var err error
		l, err = lc.Listen(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s %s in %s: %w", network, addr, netns, err)
	}
	return l, nil
}
