// Package patient makes informers wait out an unreachable API server instead of backing
// off, so watches resume within a second of the server answering again.
package patient

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
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
)

// ReadyProbe returns a check of the API server's /readyz, which every authenticated
// identity may read.
func ReadyProbe(cfg *rest.Config) (func(context.Context) error, error) {
	kube, err := kubernetes.NewForConfig(rest.CopyConfig(cfg))
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		return kube.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error()
	}, nil
}

// ForConfig is Informers with a /readyz probe of cfg's API server, checked every second.
func ForConfig(cfg *rest.Config) (func(toolscache.ListerWatcher, runtime.Object, time.Duration, toolscache.Indexers) toolscache.SharedIndexInformer, error) {
	ready, err := ReadyProbe(cfg)
	if err != nil {
		return nil, err
	}
	return Informers(ready, time.Second), nil
}

// Informers returns an informer constructor (for cache.Options.NewInformer) whose
// list and watch calls wait out an unreachable API server, checking it with ready every
// interval, instead of failing at once.
//
// A failing reflector sleeps in an exponential backoff of up to 30 s with full jitter
// (https://github.com/kubernetes/client-go/blob/v0.37.2/tools/cache/reflector.go), so
// after an outage of a minute an informer could take another minute to hear from the
// server. Waiting here instead resumes the watches within one interval of the broker
// answering again. Other errors pass through unchanged.
func Informers(ready func(context.Context) error, interval time.Duration) func(toolscache.ListerWatcher, runtime.Object, time.Duration, toolscache.Indexers) toolscache.SharedIndexInformer {
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
