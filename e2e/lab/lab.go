package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/e2e/lab/controlplane"
	"github.com/mcnet-io/mcnet/e2e/lab/network"
	"github.com/mcnet-io/mcnet/e2e/lab/node"
	"github.com/mcnet-io/mcnet/e2e/lab/proc"
	"github.com/mcnet-io/mcnet/internal/registry"
)

// GatewayLabel marks the nodes mcnet may run its gateway on.
const GatewayLabel = mcnetv1.GatewayLabel

// Options describe the lab to bring up.
type Options struct {
	// Clusters to create; at least one.
	Clusters []ClusterOptions
	// Dir holds certificates, etcd data, kubeconfigs and per-node directories. Default: a
	// new directory under the system temp dir. Stop removes it.
	Dir string
	// LogDir receives one log file per process. Default: Dir/logs (removed by Stop);
	// set it outside Dir to keep logs after the lab is gone.
	LogDir string
	// RepoRoot is where bin/ is found. Default: the directory holding go.mod above the
	// working directory.
	RepoRoot string
	// ProxyMode is kube-proxy's --proxy-mode: "iptables" (default) or "nftables".
	ProxyMode string
	// NetworkPolicy runs a NetworkPolicy engine on every node of every cluster
	// (kube-router's firewall, bin/kube-router/KubeRouterVersion), so NetworkPolicy
	// objects are enforced. Without it, as without a policy-enforcing CNI, they are not.
	NetworkPolicy bool
	// Registry, if set, serves images the nodes pull (an OCI distribution API
	// handler), on every node's loopback at RegistryAddr, which containerd uses as its
	// mirror for docker.io and the other public registries.
	Registry http.Handler
	// Images are image archives (docker-archive or OCI tar, as `ctr images import`
	// takes) loaded into every node's containerd before its kubelet starts, beside
	// what the registry serves.
	Images []string
	// Progress, if set, receives one line per step while the lab starts and stops.
	Progress io.Writer
}

// ClusterOptions describe one cluster.
type ClusterOptions struct {
	// Name is a DNS label, unique in the lab.
	Name string
	// PodCIDR and ServiceCIDR default to 10.(10I+10).0.0/16 and 10.(10I+11).0.0/16 for
	// the I-th cluster.
	PodCIDR, ServiceCIDR string
	// ServiceCIDRv6, when set, makes the API server serve dual-stack Services (a fleet's
	// IPv6 service CIDR). The lab's datapath is IPv4 only: nothing routes those addresses.
	ServiceCIDRv6 string
	// Nodes is the number of nodes (default and minimum 2).
	Nodes int
	// Gateways is how many of the nodes are labelled mcnet.io/gateway=true and joined to
	// the WAN (default 1; the rest are workers).
	Gateways int
	// BehindNAT puts the gateways behind a 1:1 NAT router: their interface addresses are
	// private, and other clusters reach them at different public addresses.
	BehindNAT bool
	// ProxyMode is this cluster's kube-proxy mode, "iptables" or "nftables" (default:
	// Options.ProxyMode), so one lab can run both.
	ProxyMode string
}

// Lab is a running set of clusters. Its methods are safe for concurrent use.
type Lab struct {
	// RunID is unique per run; every network namespace is named Prefix+RunID+"-…".
	RunID string
	// Dir and LogDir are as in Options, after defaults.
	Dir, LogDir string
	// WANNetns is the namespace of the WAN bridge all gateways attach to.
	WANNetns string

	opts     Options
	root     string
	tools    tools
	clusters []*Cluster

	mu        sync.Mutex
	netnses   []string         // every namespace created, in creation order
	topology  network.Topology // the links between them, as built
	procs     proc.Set         // workload processes (iperf3 servers …), not control planes
	servers   []io.Closer
	nodes     []*node.Node
	registry  http.Handler
	images    []string
	imageRefs Images
	runDir    string // sockets and mount namespaces: /run/mcnet-lab/RUNID, a private mount
	stopped   bool
}

// Cluster is one Kubernetes cluster of the lab.
type Cluster struct {
	// Name as given in ClusterOptions; Index is its position in Options.Clusters.
	Name  string
	Index int
	// PodCIDR and ServiceCIDR are the cluster's ranges; ServiceCIDRv6 is invalid unless
	// the API server also serves IPv6 Services.
	PodCIDR, ServiceCIDR, ServiceCIDRv6 netip.Prefix
	// Kubeconfig is the path of an admin kubeconfig usable from the host (through a
	// loopback proxy kept by the lab process) while the lab runs.
	Kubeconfig string
	// Config and Client are an admin client for the test process.
	Config *rest.Config
	Client kubernetes.Interface
	// APIServer is the API server's address as seen from node and pod namespaces.
	APIServer netip.AddrPort
	// PublicAPIServer is the API server's address on the WAN, reachable from every
	// cluster's nodes and pods (what a broker URL points at).
	PublicAPIServer netip.AddrPort
	// Netns is the control-plane namespace: etcd, the API server, the controller manager
	// and the node LAN bridge.
	Netns string
	// Nodes of the cluster, gateways first.
	Nodes []*Node
	// BehindNAT is as in ClusterOptions; NATNetns is the router namespace if so.
	BehindNAT bool
	// ProxyMode is the mode its kube-proxies run in.
	ProxyMode string
	NATNetns  string

	lab    *Lab
	dir    string
	cp     *controlplane.ControlPlane // set once it starts; guarded by lab.mu
	procs  proc.Set                   // what the cluster runs on its nodes: kube-proxy, kube-router
	podSeq int
	pods   []*Pod
}

// Node is one node: a network namespace on its cluster's LAN.
type Node struct {
	Name    string
	Cluster *Cluster
	Netns   string
	// IP is the node's LAN address (its InternalIP).
	IP netip.Addr
	// PodCIDR is the node's slice of the cluster's pod CIDR.
	PodCIDR netip.Prefix
	// Gateway nodes carry GatewayLabel and a WAN interface "wan0" with address WANIP;
	// PublicIP is where other clusters reach it (differs from WANIP behind NAT).
	Gateway         bool
	WANIP, PublicIP netip.Addr
	index           int
	down            bool
	runtime         *node.Node
}

// Dir is a per-node directory under the lab directory (hostPath volumes live here).
func (n *Node) Dir() string { return filepath.Join(n.Cluster.dir, "nodes", n.Name) }

// Clusters returns the clusters in the order they were given.
func (l *Lab) Clusters() []*Cluster { return l.clusters }

// Cluster returns the named cluster or nil.
func (l *Lab) Cluster(name string) *Cluster {
	for _, c := range l.clusters {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Node returns the named node or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Gateways returns the gateway nodes; Workers the others.
func (c *Cluster) Gateways() []*Node { return c.filterNodes(true) }

// Workers returns the nodes without the gateway label.
func (c *Cluster) Workers() []*Node { return c.filterNodes(false) }

func (c *Cluster) filterNodes(gw bool) []*Node {
	var out []*Node
	for _, n := range c.Nodes {
		if n.Gateway == gw {
			out = append(out, n)
		}
	}
	return out
}

var dnsLabel = regexp.MustCompile(`^[a-z]([a-z0-9-]{0,18}[a-z0-9])?$`)

func (o *Options) complete() error {
	var errs []error
	if len(o.Clusters) == 0 {
		errs = append(errs, errors.New("no clusters"))
	}
	if len(o.Clusters) > network.MaxClusters {
		errs = append(errs, fmt.Errorf("%d clusters, at most %d", len(o.Clusters), network.MaxClusters))
	}
	seen := map[string]bool{}
	for i := range o.Clusters {
		c := &o.Clusters[i]
		if !dnsLabel.MatchString(c.Name) {
			errs = append(errs, fmt.Errorf("cluster %d: name %q is not a DNS label of at most 20 characters", i, c.Name))
		}
		if seen[c.Name] {
			errs = append(errs, fmt.Errorf("cluster %q given twice", c.Name))
		}
		seen[c.Name] = true
		pod, svc := network.DefaultCIDRs(i)
		if c.PodCIDR == "" {
			c.PodCIDR = pod.String()
		}
		if c.ServiceCIDR == "" {
			c.ServiceCIDR = svc.String()
		}
		for _, s := range []string{c.PodCIDR, c.ServiceCIDR} {
			if p, err := netip.ParsePrefix(s); err != nil || !p.Addr().Is4() {
				errs = append(errs, fmt.Errorf("cluster %q: %q is not an IPv4 CIDR", c.Name, s))
			}
		}
		if p, err := netip.ParsePrefix(c.ServiceCIDRv6); c.ServiceCIDRv6 != "" && (err != nil || !p.Addr().Is6()) {
			errs = append(errs, fmt.Errorf("cluster %q: %q is not an IPv6 CIDR", c.Name, c.ServiceCIDRv6))
		}
		if c.Nodes == 0 {
			c.Nodes = 2
		}
		if c.Gateways == 0 {
			c.Gateways = 1
		}
		if c.Nodes < 2 || c.Gateways > c.Nodes || c.Nodes > 200 {
			errs = append(errs, fmt.Errorf("cluster %q: %d nodes with %d gateways: need 2 to 200 nodes and at most as many gateways", c.Name, c.Nodes, c.Gateways))
		}
	}
	switch o.ProxyMode {
	case "":
		o.ProxyMode = "iptables"
	case "iptables", "nftables":
	default:
		errs = append(errs, fmt.Errorf("proxy mode %q: want iptables or nftables", o.ProxyMode))
	}
	for i := range o.Clusters {
		c := &o.Clusters[i]
		switch c.ProxyMode {
		case "":
			c.ProxyMode = o.ProxyMode
		case "iptables", "nftables":
		default:
			errs = append(errs, fmt.Errorf("cluster %q: proxy mode %q: want iptables or nftables", c.Name, c.ProxyMode))
		}
	}
	return errors.Join(errs...)
}

// Start brings up the lab and returns once every API server is ready, every node and
// kube-proxy runs and Services work. On error, everything already created is removed.
// Stale labs of killed runs are removed first.
func Start(ctx context.Context, opts Options) (_ *Lab, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the lab needs root: it creates network namespaces")
	}
	if err := opts.complete(); err != nil {
		return nil, fmt.Errorf("lab options: %w", err)
	}
	root := opts.RepoRoot
	if root == "" {
		if root, err = RepoRoot(""); err != nil {
			return nil, err
		}
	}
	t, err := findTools(root)
	if err != nil {
		return nil, err
	}
	if opts.NetworkPolicy {
		if _, err := kubeRouterBinary(root); err != nil {
			return nil, err
		}
	}
	if err := node.CheckHost(); err != nil {
		return nil, err
	}
	if err := CleanStale(ctx, opts.Progress); err != nil {
		return nil, fmt.Errorf("clean stale labs: %w", err)
	}

	l := &Lab{RunID: newRunID(), opts: opts, root: root, tools: t}
	l.WANNetns = l.netnsName("wan")
	if l.Dir = opts.Dir; l.Dir == "" {
		if l.Dir, err = os.MkdirTemp("", "mcnet-lab-"+l.RunID+"-"); err != nil {
			return nil, fmt.Errorf("lab dir: %w", err)
		}
	}
	if l.LogDir = opts.LogDir; l.LogDir == "" {
		l.LogDir = filepath.Join(l.Dir, "logs")
	}
	if err := os.MkdirAll(l.LogDir, 0o755); err != nil {
		return nil, fmt.Errorf("log dir: %w", err)
	}
	if err := writeOwner(l.RunID, l.Dir); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			// Stop with a fresh context: ctx may be what was cancelled.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			err = errors.Join(err, l.Stop(sctx))
		}
	}()

	if err := l.makeRunDir(ctx); err != nil {
		return l, err
	}
	// What `make image` built is served by the registry on every node's loopback.
	if l.imageRefs, err = FindImages(root); err != nil {
		return l, err
	}
	if l.registry = opts.Registry; l.registry == nil {
		if l.registry, err = registry.FromLayouts(l.imageRefs.Layouts...); err != nil {
			return l, err
		}
	}
	l.images = opts.Images
	// The cluster DNS image is the lab's own: CoreDNS as `make tools` built it.
	if dns, err := coreDNSImageArchive(root, filepath.Join(l.Dir, "images")); err == nil {
		l.images = append(l.images, dns)
	} else if !errors.Is(err, ErrCoreDNSNotBuilt) {
		return l, err
	}

	start := time.Now()
	l.progress("lab %s: %d clusters, logs in %s", l.RunID, len(opts.Clusters), l.LogDir)
	if err := l.buildNetwork(ctx); err != nil {
		return l, err
	}
	l.progress("network namespaces ready (%s)", time.Since(start).Round(time.Millisecond))

	g, gctx := errgroup.WithContext(ctx)
	for _, c := range l.clusters {
		g.Go(func() error { return c.start(gctx) })
	}
	if err := g.Wait(); err != nil {
		return l, err
	}
	if err := l.writeKubeconfig(); err != nil {
		return l, fmt.Errorf("lab kubeconfig: %w", err)
	}
	l.progress("lab %s ready in %s", l.RunID, time.Since(start).Round(time.Millisecond))
	return l, nil
}

func (l *Lab) progress(format string, args ...any) {
	if l.opts.Progress != nil {
		fmt.Fprintf(l.opts.Progress, format+"\n", args...)
	}
}

func (l *Lab) netnsName(suffix string) string { return Prefix + l.RunID + "-" + suffix }

// ErrStop marks the error of a Stop that did not remove everything (Start returns it
// too when it failed and could not undo what it had created): namespaces, mounts or
// processes may be left behind, for CleanStale or `make lab-down`.
var ErrStop = errors.New("lab not fully removed")

// Stop removes everything the lab created: processes (API servers before their etcd),
// network namespaces and, unless they were placed outside it, the lab directory with
// the logs. It is safe to call more than once. Its errors wrap ErrStop.
func (l *Lab) Stop(ctx context.Context) error {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return nil
	}
	l.stopped = true
	nodes, servers := l.nodes, l.servers
	l.mu.Unlock()

	// Nodes first, so no kubelet restarts what is being stopped; in parallel, because
	// killing a node's containers waits for them to die.
	nerrs := make([]error, len(nodes))
	var nwg sync.WaitGroup
	for i, n := range nodes {
		nwg.Add(1)
		go func() {
			defer nwg.Done()
			nerrs[i] = n.Stop(ctx)
		}()
	}
	nwg.Wait()
	errs := append([]error(nil), nerrs...)
	for _, s := range servers {
		_ = s.Close()
	}
	errs = append(errs, l.procs.StopAll(ctx))
	var wg sync.WaitGroup
	cerrs := make([]error, len(l.clusters))
	for i, c := range l.clusters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cerrs[i] = c.stop(ctx)
		}()
	}
	wg.Wait()
	errs = append(errs, cerrs...)

	l.mu.Lock()
	netnses := l.netnses
	l.mu.Unlock()
	errs = append(errs, network.RemoveNetns(ctx, netnses))
	errs = append(errs, removeRunDir(l.runDir))
	if err := os.RemoveAll(l.Dir); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, removeOwner(l.RunID))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stop lab %s: %w: %w", l.RunID, ErrStop, err)
	}
	l.progress("lab %s removed", l.RunID)
	return nil
}

// Kubeconfig is the path of one kubeconfig holding an admin context per cluster, named
// after the cluster (for `kubectl --context east`, and the MCS conformance suite's
// -contexts), usable from the host while the lab runs.
func (l *Lab) Kubeconfig() string { return filepath.Join(l.Dir, "kubeconfig") }

// writeKubeconfig merges the clusters' admin kubeconfigs into Kubeconfig.
func (l *Lab) writeKubeconfig() error {
	merged := clientcmdapi.NewConfig()
	for _, c := range l.clusters {
		cfg, err := clientcmd.LoadFromFile(c.Kubeconfig)
		if err != nil {
			return err
		}
		for k, v := range cfg.Clusters {
			merged.Clusters[k] = v
		}
		for k, v := range cfg.AuthInfos {
			merged.AuthInfos[k] = v
		}
		for k, v := range cfg.Contexts {
			merged.Contexts[k] = v
		}
	}
	if len(l.clusters) > 0 {
		merged.CurrentContext = l.clusters[0].Name
	}
	return clientcmd.WriteToFile(*merged, l.Kubeconfig())
}

// Kubectl is the pinned kubectl the lab's summary and tests use.
func (l *Lab) Kubectl() string { return l.tools.kubectl }
