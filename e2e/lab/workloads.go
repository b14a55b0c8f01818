package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mcnet-io/mcnet/e2e/lab/proc"
)

// ServeHTTP serves HTTP on port inside the pod until the lab stops. Every request is
// answered with "<cluster>/<namespace>/<pod> <client address>", so a test sees which
// backend answered and which source address arrived (NAT or not). The listener lives
// in the pod's namespace; the lab process serves it, so no binary is needed in the pod.
func (p *Pod) ServeHTTP(ctx context.Context, port int) error {
	ln, err := p.Listen(ctx, "tcp", net.JoinHostPort("0.0.0.0", strconv.Itoa(port)))
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s\n", p, r.RemoteAddr)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(ln) }()
	return p.Node.Cluster.lab.addServer(srv)
}

// ServeEcho serves a TCP echo on port inside the pod until the lab stops.
func (p *Pod) ServeEcho(ctx context.Context, port int) error {
	ln, err := p.Listen(ctx, "tcp", net.JoinHostPort("0.0.0.0", strconv.Itoa(port)))
	if err != nil {
		return err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return p.Node.Cluster.lab.addServer(ln)
}

// ErrCoreDNSNotBuilt says bin/ has no CoreDNS: hack/build-tools.sh coredns (make e2e)
// builds it.
var ErrCoreDNSNotBuilt = errors.New("no CoreDNS in bin/coredns/" + CoreDNSBuild + ": run `make tools`")

// StartCoreDNS runs CoreDNS (bin/coredns/VERSION/coredns) on port 53 inside the pod
// until the lab stops, serving corefile. files are written beside the Corefile, by
// relative path, and "{{dir}}" in corefile names their directory, so the Corefile can
// import them as a cluster's CoreDNS imports files mounted from ConfigMaps. It returns
// once CoreDNS answers.
func (p *Pod) StartCoreDNS(ctx context.Context, corefile string, files map[string]string) error {
	l := p.Node.Cluster.lab
	bin, err := coreDNSBinary(l.root)
	if err != nil {
		return err
	}
	dir := filepath.Join(l.Dir, "coredns", p.Node.Cluster.Name, p.Name)
	for name, data := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			return err
		}
	}
	conf := filepath.Join(dir, "Corefile")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(conf, []byte(strings.ReplaceAll(corefile, "{{dir}}", dir)), 0o644); err != nil {
		return err
	}
	log := filepath.Join(l.LogDir, p.Node.Cluster.Name, p.Node.Name, "coredns-"+p.Name+".log")
	proc, err := proc.Start(p.String()+"/coredns", p.Netns, log, nil, bin, "-conf", conf, "-dns.port", "53")
	if err != nil {
		return err
	}
	l.procs.Add(proc)
	return Eventually(ctx, 10*time.Second, func(ctx context.Context) error {
		if proc.Exited() {
			return Permanent(fmt.Errorf("coredns in %s exited: %w", p, proc.ExitError()))
		}
		// Any answer, even REFUSED, means it serves; dig exits non-zero without one.
		_, err := p.Exec(ctx, "dig", "+time=1", "+tries=1", "@"+p.IP.String(), "health.check.", "A")
		return err
	})
}

func (l *Lab) addServer(s io.Closer) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		s.Close()
		return errors.New("lab is stopped")
	}
	l.servers = append(l.servers, s)
	return nil
}

// StartIperf3 runs the pod image's iperf3 server on port, inside the pod's container
// (started through pods/exec, daemonised, so it lives as long as the pod), and returns
// when it accepts connections.
func (p *Pod) StartIperf3(ctx context.Context, port int) error {
	if out, err := p.Exec(ctx, "iperf3", "--server", "--daemon", "--port", strconv.Itoa(port),
		"--logfile", fmt.Sprintf("/tmp/iperf3-%d.log", port), "--forceflush"); err != nil {
		return fmt.Errorf("start iperf3 in %s: %w: %s", p, err, out)
	}
	return Eventually(ctx, 10*time.Second, func(ctx context.Context) error {
		c, err := p.Dial(ctx, "tcp", net.JoinHostPort(p.IP.String(), strconv.Itoa(port)))
		if err != nil {
			return err
		}
		// iperf3 serves one test at a time; a bare connect and close is harmless.
		return c.Close()
	})
}

// HTTPGet fetches url from inside the pod and returns the body.
func (p *Pod) HTTPGet(ctx context.Context, url string) (string, error) {
	client := &http.Client{Transport: &http.Transport{
		DialContext:       p.Dial,
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("from pod %s: %w", p, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("from pod %s: %w", p, err)
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("from pod %s: GET %s: %s", p, url, resp.Status)
	}
	return string(b), nil
}
