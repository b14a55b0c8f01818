package lab

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/mcnet-io/mcnet/e2e/lab/proc"
)

// KubeRouterVersion is the kube-router whose NetworkPolicy controller the lab runs when
// Options.NetworkPolicy is set; hack/build-tools.sh pins the same (KUBE_ROUTER_VERSION).
//
// kube-router and not kube-network-policies: the latter hands each new connection to
// userspace with the nftables "queue" expression, which this kernel lacks
// (CONFIG_NFT_QUEUE is not set; nfnetlink_queue itself is built in), so its rules
// cannot be loaded. kube-router's firewall is iptables and ipsets, which it has.
const KubeRouterVersion = "v2.1.0"

// kubeRouterHealthPort is where each node's kube-router answers /healthz, in the
// node's namespace.
const kubeRouterHealthPort = 20244

// kubeRouterBinary is the pinned kube-router build.
func kubeRouterBinary(root string) (string, error) {
	p := filepath.Join(root, "bin", "kube-router", KubeRouterVersion, "kube-router")
	if err := executable(p); err != nil {
		return "", fmt.Errorf("%w (the NetworkPolicy engine; run `make tools` or hack/build-tools.sh kube-router): %w", ErrMissingBinary, err)
	}
	return p, nil
}

// startNetworkPolicy runs kube-router on every node of the cluster with only its
// firewall on (no routing, no service proxy: the lab's CNI routes and kube-proxy
// serves Services), the way a cluster runs a NetworkPolicy engine as a DaemonSet: it
// watches Pods, Namespaces and NetworkPolicies and writes each node's iptables filter
// chains and ipsets for the pods on that node. It returns once every node's engine is
// healthy and has written its chains.
func (c *Cluster) startNetworkPolicy(ctx context.Context) error {
	l := c.lab
	bin, err := kubeRouterBinary(l.root)
	if err != nil {
		return err
	}
	procs := make([]*proc.Process, len(c.Nodes))
	for i, n := range c.Nodes {
		if procs[i], err = c.startProc("kube-router", n.Netns, bin,
			"--run-firewall=true",
			"--run-router=false",
			"--run-service-proxy=false",
			"--enable-cni=false",
			"--enable-ipv6=false",
			// It lists Pods, Namespaces and NetworkPolicies cluster-wide.
			"--kubeconfig="+c.path("admin-in-lab.kubeconfig"),
			"--hostname-override="+n.Name,
			"--service-cluster-ip-range="+c.ServiceCIDR.String(),
			"--health-port="+strconv.Itoa(kubeRouterHealthPort),
			"--metrics-port=0",
			"--v=1",
		); err != nil {
			return err
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	for i, n := range c.Nodes {
		g.Go(func() error {
			url := fmt.Sprintf("http://127.0.0.1:%d/healthz", kubeRouterHealthPort)
			if err := waitHealthz(gctx, n.Netns, url, procs[i]); err != nil {
				return err
			}
			// Its first full sync writes the chain every forwarded packet passes.
			return Eventually(gctx, 60*time.Second, func(ctx context.Context) error {
				if procs[i].Exited() {
					return Permanent(procs[i].ExitError())
				}
				_, err := n.Exec(ctx, "iptables", "-w", "-S", "KUBE-ROUTER-FORWARD")
				return err
			})
		})
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("cluster %s NetworkPolicy engine (kube-router): %w", c.Name, err)
	}
	l.progress("  %s: NetworkPolicy engine (kube-router %s) on %d nodes", c.Name, KubeRouterVersion, len(c.Nodes))
	return nil
}
