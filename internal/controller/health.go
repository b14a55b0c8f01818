package controller

import (
	"context"
	"errors"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/mcnet-io/mcnet/internal/healthz"
)

// probes answers /healthz and /readyz for the life of the process, across the
// manager runs Run starts one after another. A manager's own probe server would be
// gone between two runs, and the kubelet would restart a container that is only
// waiting for its API server to come back.
type probes struct {
	mu sync.Mutex
	// ready checks the running manager; nil while none runs.
	ready func(context.Context) error
	// why says why no manager runs.
	why string
}

// running says a manager runs, ready when check passes.
func (p *probes) running(check func(context.Context) error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ready, p.why = check, ""
}

// stopped says no manager runs, and why.
func (p *probes) stopped(why string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ready, p.why = nil, why
}

// readiness is nil when the controller is ready, else why not. Bounded by readyzTimeout.
func (p *probes) readiness(ctx context.Context) error {
	p.mu.Lock()
	check, why := p.ready, p.why
	p.mu.Unlock()
	if check == nil {
		return errors.New(why)
	}
	ctx, cancel := context.WithTimeout(ctx, readyzTimeout)
	defer cancel()
	return check(ctx)
}

// handler serves /healthz (the process is alive: it answers while it waits to start
// a manager over) and /readyz (a manager runs and its local cache is synced).
func (p *probes) handler() http.Handler { return healthz.Handler(p.readiness) }

// metricsHandler serves controller-runtime's registry, which outlives managers too.
func metricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	return mux
}

// serve listens on addr ("0" or empty: not at all) and serves h until stop is called.
func serve(addr string, h http.Handler) (stop func(), err error) { return healthz.Serve(addr, h) }
