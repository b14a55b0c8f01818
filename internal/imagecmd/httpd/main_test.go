package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHTTPD(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("hello from a file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	for _, tc := range []struct {
		name, dir, path, want string
	}{
		{"host name", "", "/some/path", host + " GET /some/path\n"},
		{"files", dir, "/", "hello from a file\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- serve(ctx, ln, handler(tc.dir)) }()
			resp, err := http.Get("http://" + ln.Addr().String() + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != tc.want {
				t.Errorf("GET %s: %d %q, want 200 %q", tc.path, resp.StatusCode, body, tc.want)
			}
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve after cancel: %v", err)
			}
		})
	}
	if err := run([]string{"-p", "not-a-port"}); err == nil || !strings.Contains(err.Error(), "not-a-port") {
		t.Errorf("run -p not-a-port: %v", err)
	}
}
