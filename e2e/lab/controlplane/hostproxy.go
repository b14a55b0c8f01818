package controlplane

import (
	"context"
	"io"
	"net"
	"sync"
	"time"
)

// forwarder copies bytes between loopback connections and connections dialled inside a
// namespace.
type forwarder struct {
	ln    net.Listener
	dial  func(context.Context) (net.Conn, error)
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (f *forwarder) serve() {
	for {
		in, err := f.ln.Accept()
		if err != nil {
			return
		}
		go f.handle(in)
	}
}

func (f *forwarder) handle(in net.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	out, err := f.dial(ctx)
	cancel()
	if err != nil {
		in.Close()
		return
	}
	f.track(in, out)
	defer f.untrack(in, out)
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(out, in); closeWrite(out); done <- struct{}{} }()
	go func() { _, _ = io.Copy(in, out); closeWrite(in); done <- struct{}{} }()
	<-done
	<-done
	in.Close()
	out.Close()
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

func (f *forwarder) track(cs ...net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conns == nil {
		f.conns = map[net.Conn]struct{}{}
	}
	for _, c := range cs {
		f.conns[c] = struct{}{}
	}
}

func (f *forwarder) untrack(cs ...net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range cs {
		delete(f.conns, c)
	}
}

// Close stops accepting and closes every open connection, so watches end.
func (f *forwarder) Close() error {
	err := f.ln.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.conns {
		c.Close()
	}
	return err
}
