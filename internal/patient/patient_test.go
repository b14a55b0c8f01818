package patient

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

// fakeServer is an API server that is down until up is set.
type fakeServer struct {
	up    atomic.Bool
	calls atomic.Int32
	err   error // returned while down
}

func (f *fakeServer) lw() *toolscache.ListWatch {
	return &toolscache.ListWatch{
		ListWithContextFunc: func(context.Context, metav1.ListOptions) (runtime.Object, error) {
			f.calls.Add(1)
			if !f.up.Load() {
				return nil, f.err
			}
			return &mcnetv1.EndpointList{}, nil
		},
		WatchFuncWithContext: func(context.Context, metav1.ListOptions) (watch.Interface, error) {
			f.calls.Add(1)
			if !f.up.Load() {
				return nil, f.err
			}
			return watch.NewFake(), nil
		},
	}
}

func (f *fakeServer) ready(context.Context) error {
	if f.up.Load() {
		return nil
	}
	return errors.New("not ready")
}

func refused() error {
	return fmt.Errorf("dial tcp 198.18.0.1:6443: %w", syscall.ECONNREFUSED)
}

func TestPatientListWaitsOutAnOutage(t *testing.T) {
	f := &fakeServer{err: refused()}
	p := &patientLW{lw: toolscache.ToListerWatcherWithContext(f.lw()), ready: f.ready, interval: 10 * time.Millisecond}
	go func() {
		for f.calls.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		f.up.Store(true) // the broker comes back after the first refused call
	}()
	obj, err := p.ListWithContext(t.Context(), metav1.ListOptions{})
	if err != nil || obj == nil {
		t.Fatalf("list after recovery: %v, %v", obj, err)
	}
	w, err := p.WatchWithContext(t.Context(), metav1.ListOptions{})
	if err != nil || w == nil {
		t.Fatalf("watch after recovery: %v", err)
	}
}

func TestPatientPassesOtherErrorsThrough(t *testing.T) {
	forbidden := apierrors.NewForbidden(schema.GroupResource{Group: "mcnet.io", Resource: "endpoints"}, "", errors.New("no"))
	f := &fakeServer{err: forbidden}
	p := &patientLW{lw: toolscache.ToListerWatcherWithContext(f.lw()), ready: f.ready, interval: time.Hour}
	if _, err := p.ListWithContext(t.Context(), metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("want the 403 at once, got %v", err)
	}
	if n := f.calls.Load(); n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
}

func TestPatientStopsWithItsContext(t *testing.T) {
	f := &fakeServer{err: refused()}
	p := &patientLW{lw: toolscache.ToListerWatcherWithContext(f.lw()), ready: f.ready, interval: 5 * time.Millisecond}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := p.WatchWithContext(ctx, metav1.ListOptions{}); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("want the connection error once the context ends, got %v", err)
	}
}
