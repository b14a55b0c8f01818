// Package healthz serves the HTTP probes the kubelet asks mcnet's processes:
// /healthz (the process is alive) and /readyz (it does its job now).
package healthz

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// Serve listens on addr ("0" or empty: not at all) and serves h until stop is called.
// The listen happens before Serve returns, so a taken port is the caller's error, at
// once, rather than a probe that never answers.
func Serve(addr string, h http.Handler) (stop func(), err error) {
	if addr == "" || addr == "0" {
		return func() {}, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}

// Handler answers /healthz while the process runs, and /readyz with 200 when ready
// returns nil, else 503 and the reason. ready gets the request's context.
func Handler(ready func(context.Context) error) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := ready(r.Context()); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// Readiness holds why a process is not ready: the outcome of its last unit of work,
// set by the loop that does it and read by /readyz on the server's goroutines. The
// zero value is ready; processes set a "starting" reason before their first pass.
type Readiness struct {
	notReady atomic.Pointer[error]
}

// Set records the last outcome: nil is ready, an error is the reason /readyz gives.
func (r *Readiness) Set(err error) {
	if err == nil {
		r.notReady.Store(nil)
		return
	}
	r.notReady.Store(&err)
}

// Check is nil when ready, else the recorded reason; it fits Handler.
func (r *Readiness) Check(context.Context) error {
	if err := r.notReady.Load(); err != nil {
		return *err
	}
	return nil
}
