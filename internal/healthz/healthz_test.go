package healthz

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

func TestServeAnswersReadiness(t *testing.T) {
	var why atomic.Pointer[string]
	ready := func(context.Context) error {
		if w := why.Load(); w != nil {
			return errors.New(*w)
		}
		return nil
	}
	msg := "starting"
	why.Store(&msg)
	stop, addr := serveOnFree(t, Handler(ready))
	defer stop()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz while not ready: %d, want 200", code)
	}
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "starting") {
		t.Errorf("/readyz while starting: %d %q, want 503 with the reason", code, body)
	}
	why.Store(nil)
	if code, _ := get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz when ready: %d, want 200", code)
	}
	if _, err := Serve(addr, Handler(ready)); err == nil {
		t.Errorf("Serve on a taken address %s succeeded", addr)
	}
	if stop, err := Serve("0", nil); err != nil {
		t.Errorf(`Serve("0"): %v, want disabled without error`, err)
	} else {
		stop()
	}
}

// serveOnFree serves h on a free loopback port and returns its address.
func serveOnFree(t *testing.T, h http.Handler) (func(), string) {
	t.Helper()
	for range 10 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		if stop, err := Serve(addr, h); err == nil {
			return stop, addr
		}
	}
	t.Fatal("no free port")
	return nil, ""
}
