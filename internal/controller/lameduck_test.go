package controller

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// TestLameDuck: once the signal's context ends, the server's context lives on for the
// delay with draining set (so /readyz fails while DNS still answers), then ends.
func TestLameDuck(t *testing.T) {
	signal, cancel := context.WithCancel(t.Context())
	var draining atomic.Bool
	run := lameDuck(signal, 300*time.Millisecond, &draining)
	cancel()
	stopped := time.Now()
	for !draining.Load() {
		if time.Since(stopped) > 5*time.Second {
			t.Fatal("draining not set after the signal")
		}
		time.Sleep(time.Millisecond)
	}
	if run.Err() != nil {
		t.Fatal("the server's context ended with the signal; want it to outlive it by the delay")
	}
	select {
	case <-run.Done():
		if took := time.Since(stopped); took < 300*time.Millisecond {
			t.Errorf("the server's context ended %s after the signal, before the 300ms delay", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the server's context never ended")
	}
	if ctx := lameDuck(signal, 0, &draining); ctx != signal {
		t.Error("a zero delay must stop with the signal")
	}
}
