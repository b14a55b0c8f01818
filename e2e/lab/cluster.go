package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/mcnet-io/mcnet/e2e/lab/controlplane"
	"github.com/mcnet-io/mcnet/e2e/lab/network"
	"github.com/mcnet-io/mcnet/e2e/lab/proc"
)

// start brings up the cluster's control plane, registers its nodes and starts
// kube-proxy on each.
func (c *Cluster) start(ctx context.Context) error {
	l := c.lab
	cp, err := controlplane.Start(ctx, controlplane.Config{
		Name:   c.Name,
		Netns:  c.Netns,
		Dir:    c.dir,
		LogDir: filepath.Join(l.LogDir, c.Name),
		Binaries: controlplane.Binaries{
			Etcd: l.tools.etcd, APIServer: l.tools.apiserver,
			ControllerManager: l.tools.controllerManager, Scheduler: l.tools.scheduler,
		},
		APIServer:       c.APIServer,
		PublicAPIServer: c.PublicAPIServer,
		ServiceCIDR:     c.ServiceCIDR,
		ServiceCIDRv6:   c.ServiceCIDRv6,
	})
	if cp != nil {
		l.mu.Lock()
		c.cp = cp
		l.mu.Unlock()
	}
	if err != nil {
		return err
	}
	c.Kubeconfig, c.Config, c.Client = cp.Kubeconfig, cp.Config, cp.Client
	l.progress("  %s: API server ready at %s (host: %s)", c.Name, c.APIServer, c.Config.Host)

	if err := c.startNodes(ctx); err != nil {
		return err
	}
	l.progress("  %s: %d kubelets registered", c.Name, len(c.Nodes))
	proxies := make([]*proc.Process, len(c.Nodes))
	for i, n := range c.Nodes {
		// kube-proxy reads its node's IP from the Node object, so it starts after them.
		if proxies[i], err = c.startProc("kube-proxy", n.Netns,
			l.tools.proxy,
			"--kubeconfig="+c.path("kube-proxy.kubeconfig"),
			"--hostname-override="+n.Name,
			"--cluster-cidr="+c.PodCIDR.String(),
			"--proxy-mode="+c.ProxyMode,
			// Leave the host-wide conntrack table size and timeouts alone.
			"--conntrack-max-per-core=0",
			"--conntrack-tcp-timeout-established=0",
			"--conntrack-tcp-timeout-close-wait=0",
			"--nodeport-addresses=primary",
			"--v=1",
		); err != nil {
			return err
		}
	}
	// While kube-proxies come up, a control-plane component that exits fails the
	// start at once instead of at the timeout.
	watch := cp.Processes()
	g, gctx := errgroup.WithContext(ctx)
	for i, n := range c.Nodes {
		g.Go(func() error {
			return waitHealthz(gctx, n.Netns, "http://127.0.0.1:10256/healthz", append([]*proc.Process{proxies[i]}, watch...)...)
		})
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("cluster %s kube-proxy: %w", c.Name, err)
	}
	if err := c.WaitNodesReady(ctx, 60*time.Second); err != nil {
		return fmt.Errorf("cluster %s: %w", c.Name, err)
	}
	l.progress("  %s: %d nodes Ready with kube-proxy", c.Name, len(c.Nodes))
	if l.opts.NetworkPolicy {
		return c.startNetworkPolicy(ctx)
	}
	return nil
}

// path is a file in the cluster's directory, which the control plane shares: ca.crt
// and the kubeconfigs it wrote for the components that run on nodes.
func (c *Cluster) path(name string) string { return filepath.Join(c.dir, name) }

// startProc starts a cluster component on a node (kube-proxy, the NetworkPolicy
// engine); its log is named after it, in the node's log directory.
func (c *Cluster) startProc(component, netns string, argv ...string) (*proc.Process, error) {
	node := strings.TrimPrefix(netns, c.lab.netnsName(""))
	p, err := proc.Start(c.Name+"/"+component, netns, filepath.Join(c.lab.LogDir, c.Name, node, component+".log"), nil, argv...)
	if err != nil {
		return nil, err
	}
	c.procs.Add(p)
	return p, nil
}

// StopAPIServer stops the cluster's kube-apiserver as an outage would: etcd, the
// controller manager, kube-proxy and every pod keep running, and clients see
// connections refused until StartAPIServer.
func (c *Cluster) StopAPIServer(ctx context.Context) error {
	return c.controlPlane().StopAPIServer(ctx)
}

// StartAPIServer starts the cluster's kube-apiserver again with the flags it first
// ran with and waits until it is ready.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	return c.controlPlane().StartAPIServer(ctx)
}

func (c *Cluster) controlPlane() *controlplane.ControlPlane {
	c.lab.mu.Lock()
	defer c.lab.mu.Unlock()
	return c.cp
}

// processes lists the cluster's own processes: the control plane's, then those it runs
// on nodes.
func (c *Cluster) processes() []*proc.Process {
	var out []*proc.Process
	if cp := c.controlPlane(); cp != nil {
		out = cp.Processes()
	}
	return append(out, c.procs.All()...)
}

// stop ends what runs on the nodes (kube-proxy, the NetworkPolicy engine) before the
// control plane they talk to, which stops its API server before etcd.
func (c *Cluster) stop(ctx context.Context) error {
	errs := []error{c.procs.StopAll(ctx)}
	if cp := c.controlPlane(); cp != nil {
		errs = append(errs, cp.Stop(ctx))
	}
	return errors.Join(errs...)
}

// waitHealthz polls an HTTP health endpoint inside a namespace, failing fast with the
// log tail if one of the watched processes exits.
func waitHealthz(ctx context.Context, netns, url string, watch ...*proc.Process) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, nw, addr string) (net.Conn, error) {
			return network.DialIn(ctx, netns, nw, addr)
		},
		DisableKeepAlives: true,
	}}
	var last error
	for {
		for _, p := range watch {
			if p.Exited() {
				return p.ExitError()
			}
		}
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s: %s", url, resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s in %s: %w (last: %v)", url, netns, ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ignoreExists treats AlreadyExists as success for idempotent creates.
func ignoreExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}
