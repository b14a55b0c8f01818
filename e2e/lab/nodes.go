package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/mcnet-io/mcnet/e2e/lab/network"
	"github.com/mcnet-io/mcnet/e2e/lab/node"
	"github.com/mcnet-io/mcnet/e2e/lab/pki"
	"github.com/mcnet-io/mcnet/e2e/lab/proc"
	"github.com/mcnet-io/mcnet/internal/agent"
	"github.com/mcnet-io/mcnet/internal/cidr"
)

// RegistryAddr is where every node's containerd finds the lab's image registry: on the
// node's own loopback, served by the lab process. containerd pulls docker.io,
// registry.k8s.io, ghcr.io, quay.io and this address itself through it, so manifests
// run unmodified (mcnet's, the MCS conformance suite's) and images are pulled the way a
// user's cluster pulls them. It serves only the lab's own images.
const RegistryAddr = "127.0.0.1:5000"

// mirroredRegistries are the registries the lab's registry stands in for.
var mirroredRegistries = []string{"docker.io", "registry.k8s.io", "ghcr.io", "quay.io", RegistryAddr}

// clusterDomain is every lab cluster's DNS domain.
const clusterDomain = "cluster.local"

// startNodes starts containerd and the kubelet on every node of the cluster, serves
// the image registry on each node's loopback, and waits until every Node is
// registered; it then gives each Node its pod CIDR (the lab is the IPAM, as a cloud's
// would be) and, for gateways, the public address other clusters reach it at.
func (c *Cluster) startNodes(ctx context.Context) error {
	l := c.lab
	for _, n := range c.Nodes {
		if err := c.writeNodeCredentials(n); err != nil {
			return err
		}
		if l.registry != nil {
			ln, err := network.ListenIn(ctx, n.Netns, "tcp", RegistryAddr)
			if err != nil {
				return fmt.Errorf("node %s registry: %w", n.Name, err)
			}
			srv := &http.Server{Handler: l.registry, ReadHeaderTimeout: 10 * time.Second}
			go func() { _ = srv.Serve(ln) }()
			if err := l.addServer(srv); err != nil {
				return err
			}
		}
		mirrors := map[string]string{}
		for _, r := range mirroredRegistries {
			mirrors[r] = "http://" + RegistryAddr
		}
		// The gateway label is under node-restriction.kubernetes.io/: the kubelet may
		// not set it (NodeRestriction), adoptNodes does, as an administrator would.
		labels := map[string]string{}
		rt, err := node.Start(ctx, node.Config{
			Name: n.Name, Netns: n.Netns, IP: n.IP, PodCIDR: n.PodCIDR,
			Dir: filepath.Join(n.Dir(), "node"), RunDir: filepath.Join(l.runDir, n.Name),
			LogDir:        filepath.Join(l.LogDir, c.Name, n.Name),
			Cgroup:        l.netnsName(n.Name),
			Kubelet:       l.tools.kubelet,
			Kubeconfig:    filepath.Join(n.Dir(), "kubelet.kubeconfig"),
			ClientCAFile:  c.path("ca.crt"),
			ServingCert:   filepath.Join(n.Dir(), "kubelet.crt"),
			ServingKey:    filepath.Join(n.Dir(), "kubelet.key"),
			ClusterDNS:    []netip.Addr{ClusterDNSIP(c.ServiceCIDR)},
			ClusterDomain: clusterDomain,
			Labels:        labels,
			SandboxImage:  SandboxImage,
			Mirrors:       mirrors,
			Images:        l.images,
		})
		if rt != nil {
			n.runtime = rt
			l.mu.Lock()
			l.nodes = append(l.nodes, rt)
			l.mu.Unlock()
		}
		if err != nil {
			return err
		}
	}
	return c.adoptNodes(ctx)
}

// ClusterDNSIP is the ClusterIP of a lab cluster's DNS Service (kube-system/kube-dns),
// the tenth address of its service CIDR as kubeadm chooses.
func ClusterDNSIP(svc netip.Prefix) netip.Addr { return cidr.Nth(svc, 10) }

// adoptNodes waits for every kubelet to register its Node and then sets what the
// kubelet cannot: spec.podCIDR and, on gateways, the gateway label and mcnet's
// public-address annotation.
func (c *Cluster) adoptNodes(ctx context.Context) error {
	for _, n := range c.Nodes {
		err := Eventually(ctx, 60*time.Second, func(ctx context.Context) error {
			if !n.runtime.Running("kubelet") {
				return Permanent(fmt.Errorf("kubelet on %s exited: %s", n.Name, proc.Tail(filepath.Join(c.lab.LogDir, c.Name, n.Name, "kubelet.log"), 15)))
			}
			_, err := c.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			return err
		})
		if err != nil {
			return fmt.Errorf("node %s never registered: %w", n.Name, err)
		}
		patch := fmt.Sprintf(`{"spec":{"podCIDR":%q,"podCIDRs":[%q]}}`, n.PodCIDR, n.PodCIDR)
		if n.Gateway {
			patch = fmt.Sprintf(`{"metadata":{"labels":{%q:"true"},"annotations":{%q:%q}},"spec":{"podCIDR":%q,"podCIDRs":[%q]}}`,
				GatewayLabel, agent.PublicIPAnnotation, n.PublicIP, n.PodCIDR, n.PodCIDR)
		}
		if _, err := c.Client.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			return fmt.Errorf("node %s: set pod CIDR: %w", n.Name, err)
		}
	}
	return nil
}

// WaitNodesReady waits until every node of the cluster reports Ready.
func (c *Cluster) WaitNodesReady(ctx context.Context, timeout time.Duration) error {
	return Eventually(ctx, timeout, func(ctx context.Context) error {
		var errs []error
		for _, n := range c.Nodes {
			obj, err := c.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if !nodeReady(obj) {
				errs = append(errs, fmt.Errorf("node %s not Ready", n.Name))
			}
		}
		return errors.Join(errs...)
	})
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// writeNodeCredentials issues the kubelet's client certificate (system:node:NAME in
// system:nodes, what the Node authorizer and NodeRestriction expect) and its serving
// certificate, for the node's address, so the API server can verify it on exec, logs
// and port-forward.
func (c *Cluster) writeNodeCredentials(n *Node) error {
	client, err := c.cp.CA.Issue("system:node:"+n.Name, []string{"system:nodes"}, nil, nil, false)
	if err != nil {
		return err
	}
	serving, err := c.cp.CA.Issue(n.Name, nil, []net.IP{n.IP.AsSlice()}, []string{n.Name}, true)
	if err != nil {
		return err
	}
	kc, err := pki.Kubeconfig(c.Name, "https://"+c.APIServer.String(), c.cp.CA.Cert, func(a *clientcmdapi.AuthInfo) {
		a.ClientCertificateData, a.ClientKeyData = client.Cert, client.Key
	})
	if err != nil {
		return err
	}
	return pki.WriteFiles(n.Dir(), map[string][]byte{
		"kubelet.kubeconfig": kc, "kubelet.crt": serving.Cert, "kubelet.key": serving.Key,
	})
}

// Runtime is the node's containerd and kubelet.
func (n *Node) Runtime() *node.Node { return n.runtime }

// Exec runs a host program inside the node's network namespace, as someone logged into
// the node would (to read its links, routes, rules and packet filter), and returns its
// combined output; the error carries the output too.
func (n *Node) Exec(ctx context.Context, cmd ...string) (string, error) {
	out, err := network.Output(ctx, "ip", append([]string{"netns", "exec", n.Netns}, cmd...)...)
	if err != nil {
		return out, fmt.Errorf("on node %s: %w", n.Name, err)
	}
	return out, nil
}
