// Command httpd is the small HTTP server of mcnet's network-tools image, for test
// workloads: `httpd -p 8080` answers every request with the serving host's name and the
// request line, `httpd -p 8080 -h /www` serves files from /www instead. The flags follow
// busybox httpd's (-f, foreground, is accepted and is the only mode).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "httpd:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("httpd", flag.ContinueOnError)
	port := fs.String("p", "80", "[IP:]PORT to listen on")
	home := fs.String("h", "", "serve files from this directory (default: answer with the host name)")
	fs.Bool("f", true, "stay in the foreground (always)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	addr := *port
	if !strings.Contains(addr, ":") {
		addr = ":" + addr
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return serve(ctx, ln, handler(*home))
}

// handler serves dir, or with no dir answers "<hostname> <method> <path>".
func handler(dir string) http.Handler {
	if dir != "" {
		return http.FileServer(http.Dir(dir))
	}
	host, _ := os.Hostname()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "%s %s %s\n", host, r.Method, r.URL.Path)
	})
}

// serve serves on ln until ctx ends, then lets requests in flight finish for a second.
func serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}
