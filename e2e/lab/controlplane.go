package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// controllers kube-controller-manager runs: what a cluster's workloads need
// (Deployments, DaemonSets, StatefulSets, Jobs and the ReplicaSets and Pods they own),
// what turns Services into EndpointSlices, namespaces and service accounts and the
// root CA ConfigMap every projected token needs, garbage collection, quotas, and node
// lifecycle (NotReady after missed heartbeats, taints, eviction).
var controllers = []string{
	"deployment-controller",
	"replicaset-controller",
	"daemonset-controller",
	"statefulset-controller",
	"job-controller",
	"garbage-collector-controller",
	"endpoints-controller",
	"endpointslice-controller",
	"endpointslice-mirroring-controller",
	"serviceaccount-controller",
	"root-ca-certificate-publisher-controller",
	"namespace-controller",
	"node-lifecycle-controller",
	"taint-eviction-controller",
	"pod-garbage-collector-controller",
	"resourcequota-controller",
	"clusterrole-aggregation-controller",
	"persistentvolume-binder-controller",
	"service-cidr-controller",
}

// start brings up the cluster's control plane, registers its nodes and starts
// kube-proxy on each.
func (c *Cluster) start(ctx context.Context) error {
	l := c.lab
	if err := c.writeCredentials(); err != nil {
		return fmt.Errorf("cluster %s credentials: %w", c.Name, err)
	}
	etcd, err := c.startEtcd()
	if err != nil {
		return err
	}
	apiserver, err := c.startAPIServer()
	if err != nil {
		return err
	}
	if err := c.startHostProxy(); err != nil {
		return err
	}
	if err := c.waitReady(ctx, apiserver, etcd); err != nil {
		return err
	}
	l.progress("  %s: API server ready at %s (host: %s)", c.Name, c.APIServer, c.Config.Host)

	kcm, err := c.startProc("kube-controller-manager", c.Netns,
		l.tools.controllerManager,
		"--kubeconfig="+c.path("kube-controller-manager.kubeconfig"),
		"--use-service-account-credentials",
		"--leader-elect=false",
		"--secure-port=0",
		"--cluster-name="+c.Name,
		"--controllers="+strings.Join(controllers, ","),
		"--root-ca-file="+c.path("ca.crt"),
		"--concurrent-gc-syncs=5",
		// Kubelets renew their Lease every 2.5 s (nodeLeaseDurationSeconds 10); a node
		// that misses 12 s of them is NotReady.
		"--node-monitor-grace-period=12s",
		"--node-monitor-period=2s",
		"--v=1",
	)
	if err != nil {
		return err
	}
	scheduler, err := c.startProc("kube-scheduler", c.Netns, l.tools.scheduler,
		"--kubeconfig="+c.path("kube-scheduler.kubeconfig"),
		"--authentication-kubeconfig="+c.path("kube-scheduler.kubeconfig"),
		"--authorization-kubeconfig="+c.path("kube-scheduler.kubeconfig"),
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=10259",
		"--v=1",
	)
	if err != nil {
		return err
	}
	if err := c.startNodes(ctx); err != nil {
		return err
	}
	l.progress("  %s: %d kubelets registered", c.Name, len(c.Nodes))
	proxies := make([]*proc, len(c.Nodes))
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
	g, gctx := errgroup.WithContext(ctx)
	for i, n := range c.Nodes {
		g.Go(func() error {
			return waitHealthz(gctx, n.Netns, "http://127.0.0.1:10256/healthz", proxies[i], kcm, scheduler)
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

func (c *Cluster) path(name string) string { return filepath.Join(c.dir, name) }

func (c *Cluster) logPath(component, node string) string {
	if node == "" {
		return filepath.Join(c.lab.LogDir, c.Name, component+".log")
	}
	return filepath.Join(c.lab.LogDir, c.Name, node, component+".log")
}

// startProc starts a control-plane component; its log is named after it (and the node
// when it runs in one).
func (c *Cluster) startProc(component, netns string, argv ...string) (*proc, error) {
	node := ""
	if netns != c.Netns {
		node = strings.TrimPrefix(netns, c.lab.netnsName(""))
	}
	p, err := startProc(c.Name+"/"+component, netns, c.logPath(component, node), nil, argv...)
	if err != nil {
		return nil, err
	}
	c.procs.add(p)
	return p, nil
}

// writeCredentials creates the cluster's CA, the API server's serving certificate,
// client certificates for the admin, the controller manager and kube-proxy, the
// service account signing key, and kubeconfigs for all of them.
func (c *Cluster) writeCredentials() error {
	p, err := newPKI(c.Name + "-ca")
	if err != nil {
		return err
	}
	c.pki = p
	serving, err := p.issue("kube-apiserver", nil,
		[]net.IP{c.APIServer.Addr().AsSlice(), c.PublicAPIServer.Addr().AsSlice(), net.IPv4(127, 0, 0, 1), firstServiceIP(c.ServiceCIDR).AsSlice()},
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}, true)
	if err != nil {
		return err
	}
	saKey, saPub, err := serviceAccountKey()
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"ca.crt": p.CACert, "apiserver.crt": serving.Cert, "apiserver.key": serving.Key,
		"sa.key": saKey, "sa.pub": saPub,
	}
	inLab := "https://" + c.APIServer.String()
	for _, u := range []struct{ file, cn, org string }{
		{"admin-in-lab.kubeconfig", "lab-admin", "system:masters"},
		{"kube-controller-manager.kubeconfig", "system:kube-controller-manager", ""},
		{"kube-proxy.kubeconfig", "system:kube-proxy", ""},
		{"kube-scheduler.kubeconfig", "system:kube-scheduler", ""},
		// The API server's identity towards kubelets (exec, logs, port-forward).
		{"apiserver-kubelet-client.kubeconfig", "kube-apiserver-kubelet-client", "system:masters"},
	} {
		var orgs []string
		if u.org != "" {
			orgs = []string{u.org}
		}
		kp, err := p.issue(u.cn, orgs, nil, nil, false)
		if err != nil {
			return err
		}
		switch u.file {
		case "admin-in-lab.kubeconfig":
			files["admin.crt"], files["admin.key"] = kp.Cert, kp.Key
		case "apiserver-kubelet-client.kubeconfig":
			files["apiserver-kubelet-client.crt"], files["apiserver-kubelet-client.key"] = kp.Cert, kp.Key
		}
		b, err := kubeconfig(c.Name, inLab, p.CACert, func(a *clientcmdapi.AuthInfo) {
			a.ClientCertificateData, a.ClientKeyData = kp.Cert, kp.Key
		})
		if err != nil {
			return err
		}
		files[u.file] = b
	}
	return writeFiles(c.dir, files)
}

// kubeconfig renders a one-context kubeconfig.
func kubeconfig(name, server string, ca []byte, auth func(*clientcmdapi.AuthInfo)) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	a := clientcmdapi.NewAuthInfo()
	auth(a)
	cfg.AuthInfos[name] = a
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	cfg.CurrentContext = name
	return clientcmd.Write(*cfg)
}

func (c *Cluster) startEtcd() (*proc, error) {
	return c.startProc("etcd", c.Netns, c.lab.tools.etcd,
		"--name="+c.Name,
		"--data-dir="+c.path("etcd"),
		"--listen-client-urls=http://127.0.0.1:2379",
		"--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380",
		"--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster="+c.Name+"=http://127.0.0.1:2380",
		// A lab's data is thrown away at the end; fsync only costs start time.
		"--unsafe-no-fsync",
		"--log-level=warn",
	)
}

// serviceRanges is the API server's --service-cluster-ip-range.
func (c *Cluster) serviceRanges() string {
	if c.ServiceCIDRv6.IsValid() {
		return c.ServiceCIDR.String() + "," + c.ServiceCIDRv6.String()
	}
	return c.ServiceCIDR.String()
}

func (c *Cluster) startAPIServer() (*proc, error) {
	return c.startProc("kube-apiserver", c.Netns, c.lab.tools.apiserver,
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address=0.0.0.0",
		"--secure-port=6443",
		"--advertise-address="+c.APIServer.Addr().String(),
		"--service-cluster-ip-range="+c.serviceRanges(),
		"--cert-dir="+c.path("apiserver-certs"),
		"--tls-cert-file="+c.path("apiserver.crt"),
		"--tls-private-key-file="+c.path("apiserver.key"),
		"--client-ca-file="+c.path("ca.crt"),
		"--service-account-key-file="+c.path("sa.pub"),
		"--service-account-signing-key-file="+c.path("sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--kubelet-client-certificate="+c.path("apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+c.path("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority="+c.path("ca.crt"),
		// Node names do not resolve in the lab.
		"--kubelet-preferred-address-types=InternalIP",
		"--allow-privileged=true",
		"--profiling=false",
		"--v=1",
	)
}

// startHostProxy listens on the host's loopback and forwards each connection to the
// API server inside the control-plane namespace. That keeps kubeconfigs usable from the
// host without a single route or address in the host's network namespace.
func (c *Cluster) startHostProxy() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("cluster %s host proxy: %w", c.Name, err)
	}
	fwd := &forwarder{ln: ln, dial: func(ctx context.Context) (net.Conn, error) {
		return dialIn(ctx, c.Netns, "tcp", c.APIServer.String())
	}}
	go fwd.serve()
	c.proxy = fwd

	host := "https://" + ln.Addr().String()
	b, err := kubeconfig(c.Name, host, c.pki.CACert, func(a *clientcmdapi.AuthInfo) {
		a.ClientCertificate, a.ClientKey = c.path("admin.crt"), c.path("admin.key")
	})
	if err != nil {
		return err
	}
	c.Kubeconfig = c.path("admin.kubeconfig")
	if err := writeFiles(c.dir, map[string][]byte{"admin.kubeconfig": b}); err != nil {
		return err
	}
	c.Config = &rest.Config{
		Host:            host,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.pki.CACert, CertFile: c.path("admin.crt"), KeyFile: c.path("admin.key")},
		// Tests create many objects quickly; client-side throttling only slows them.
		QPS: 200, Burst: 400,
	}
	c.Client, err = kubernetes.NewForConfig(c.Config)
	return err
}

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

// waitReady polls /readyz until the API server answers ok, failing fast with the log
// tail if it or etcd exits.
func (c *Cluster) waitReady(ctx context.Context, procs ...*proc) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	var last error
	for {
		for _, p := range procs {
			if p.exited() {
				return p.exitError()
			}
		}
		body, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil && string(body) == "ok" {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster %s API server not ready: %w (last: %v); see %s", c.Name, ctx.Err(), last, c.logPath("kube-apiserver", ""))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitHealthz polls an HTTP health endpoint inside a namespace.
func waitHealthz(ctx context.Context, netns, url string, watch ...*proc) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialIn(ctx, netns, network, addr)
		},
		DisableKeepAlives: true,
	}}
	var last error
	for {
		for _, p := range watch {
			if p.exited() {
				return p.exitError()
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

// stop ends the cluster's processes in reverse start order (kube-proxy, the controller
// manager, the API server, etcd) and closes the host proxy.
func (c *Cluster) stop(ctx context.Context) error {
	var errs []error
	if c.proxy != nil {
		errs = append(errs, c.proxy.Close())
	}
	errs = append(errs, c.procs.stopAll(ctx))
	return errors.Join(errs...)
}

// ignoreExists treats AlreadyExists as success for idempotent creates.
func ignoreExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}
