// Package labtest wires the lab into Go tests: it skips without root (fails under
// CI=true, where root is promised), keeps and prints logs of failed tests, and stops
// the lab on Ctrl-C.
package labtest

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mcnet-io/mcnet/e2e/lab"
)

// RequireRoot skips the test without root, or fails it when CI=true: CI runs as root,
// so a skip there would hide a broken setup.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		tb.Fatal("the lab needs root (CI=true promises it)")
	}
	tb.Skip("the lab needs root: it creates network namespaces")
}

// Start brings up a lab for the test and stops it when the test ends. The environment
// variable MCNET_LAB_PROXY_MODE picks kube-proxy's mode when opts does not. On failure the
// logs are kept and their tails printed together with a dump of each cluster.
func Start(tb testing.TB, opts lab.Options) *lab.Lab {
	tb.Helper()
	RequireRoot(tb)
	if opts.LogDir == "" {
		dir, err := os.MkdirTemp("", "mcnet-lab-logs-")
		if err != nil {
			tb.Fatal(err)
		}
		opts.LogDir = dir
	}
	if opts.ProxyMode == "" {
		// CI runs the suites once per kube-proxy mode.
		opts.ProxyMode = os.Getenv("MCNET_LAB_PROXY_MODE")
	}
	if opts.Progress == nil && testing.Verbose() {
		opts.Progress = tbWriter{tb}
	}
	ctx := tb.Context()
	l, err := lab.Start(ctx, opts)
	if err != nil {
		tb.Fatalf("start lab: %v\n(logs kept in %s)", err, opts.LogDir)
	}
	untrack := track(l)
	tb.Cleanup(func() {
		defer untrack()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if tb.Failed() {
			// The full state goes to a file beside the logs: printed, it buries the
			// test's own failure messages, and a CI log keeps only its tail.
			dump, troubled := l.DumpState(ctx)
			path := filepath.Join(opts.LogDir, "state-at-failure.txt")
			if err := os.WriteFile(path, []byte(dump), 0o644); err != nil {
				tb.Log(dump)
			} else {
				const most = 15
				for _, line := range troubled[:min(most, len(troubled))] {
					tb.Log(line)
				}
				if len(troubled) > most {
					tb.Logf("(%d more in the file)", len(troubled)-most)
				}
				tb.Logf("the lab's state at the failure: %s", path)
			}
			tb.Logf("lab logs kept in %s", opts.LogDir)
		}
		if err := l.Stop(ctx); err != nil {
			tb.Errorf("stop lab: %v", err)
		}
		switch {
		case !tb.Failed() && os.Getenv("MCNET_LAB_KEEP_LOGS") == "":
			_ = os.RemoveAll(opts.LogDir)
		case !tb.Failed():
			tb.Logf("lab logs kept in %s (MCNET_LAB_KEEP_LOGS)", opts.LogDir)
		}
	})
	return l
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(b []byte) (int, error) {
	w.tb.Log(string(b[:len(b)-min(1, len(b))]))
	return len(b), nil
}

// Running labs, stopped by the signal handler: `go test` dies on SIGINT without
// running cleanups, which would leave namespaces and API servers behind.
var (
	mu      sync.Mutex
	running = map[*lab.Lab]bool{}
	once    sync.Once
)

func track(l *lab.Lab) func() {
	once.Do(func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
		go func() {
			sig := <-ch
			mu.Lock()
			defer mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for l := range running {
				if err := l.Stop(ctx); err != nil {
					fmt.Fprintln(os.Stderr, err)
				}
			}
			fmt.Fprintf(os.Stderr, "labtest: stopped labs on %v\n", sig)
			os.Exit(130)
		}()
	})
	mu.Lock()
	running[l] = true
	mu.Unlock()
	return func() {
		mu.Lock()
		delete(running, l)
		mu.Unlock()
	}
}
