package brokersync

import (
	"context"
	"errors"
	"net"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
)

// PatientInformers returns an informer constructor (for cache.Options.NewInformer) whose
// list and watch calls wait out an unreachable API server, checking it with ready every
// interval, instead of failing at once.
//
// A failing reflector sleeps in an exponential backoff of up to 30 s with full jitter
// (https://github.com/kubernetes/client-go/blob/v0.37.2/tools/cache/reflector.go), so
// after a broker outage of a minute the mirrors could take another minute to hear from
// it. Waiting here instead resumes the watches within one interval of the broker
// answering again. Other errors pass through unchanged.
func PatientInformers(ready func(context.Context) error, interval time.Duration) func(toolscache.ListerWatcher, runtime.Object, time.Duration, toolscache.Indexers) toolscache.SharedIndexInformer {
	return func(lw toolscache.ListerWatcher, obj runtime.Object, resync time.Duration, idx toolscache.Indexers) toolscache.SharedIndexInformer {
		return toolscache.NewSharedIndexInformer(&patientLW{
			lw: toolscache.ToListerWatcherWithContext(lw), ready: ready, interval: interval,
		}, obj, resync, idx)
	}
}

type patientLW struct {
	lw       toolscache.ListerWatcherWithContext
	ready    func(context.Context) error
	interval time.Duration
}

// maxWait bounds one wait, so the reflector still logs a long outage now and then.
const maxWait = 5 * time.Minute

func (p *patientLW) List(o metav1.ListOptions) (runtime.Object, error) {
	return p.ListWithContext(context.Background(), o)
}

func (p *patientLW) Watch(o metav1.ListOptions) (watch.Interface, error) {
	return p.WatchWithContext(context.Background(), o)
}

func (p *patientLW) ListWithContext(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
	for {
		obj, err := p.lw.ListWithContext(ctx, o)
		if err == nil || !unreachable(err) || !p.wait(ctx) {
			return obj, err
		}
	}
}

func (p *patientLW) WatchWithContext(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	for {
		w, err := p.lw.WatchWithContext(ctx, o)
		if err == nil || !unreachable(err) || !p.wait(ctx) {
			return w, err
		}
	}
}

// wait polls ready until it succeeds (true) or ctx ends or maxWait passes (false).
func (p *patientLW) wait(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, maxWait)
	defer cancel()
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			probe, stop := context.WithTimeout(ctx, p.interval)
			err := p.ready(probe)
			stop()
			if err == nil {
				return true
			}
		}
	}
}

// unreachable reports errors that mean the API server did not answer at all.
func unreachable(err error) bool {
	var ne net.Error
	switch {
	case utilnet.IsConnectionRefused(err), utilnet.IsConnectionReset(err), utilnet.IsProbableEOF(err),
		errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		apierrors.IsServiceUnavailable(err):
		return true
	case errors.As(err, &ne) && ne.Timeout():
		return true
	}
	return false
}
