// Package controlplane runs one lab cluster's control plane as processes in its
// control-plane network namespace: etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler, with the cluster's credentials issued first, and a loopback proxy
// that makes the API server reachable from the host without any address or route in
// the host's network namespace.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/mcnet-io/mcnet/e2e/lab/network"
	"github.com/mcnet-io/mcnet/e2e/lab/pki"
	"github.com/mcnet-io/mcnet/e2e/lab/proc"
)

// Binaries are the programs a control plane runs.
type Binaries struct {
	Etcd, APIServer, ControllerManager, Scheduler string
}

// Config describes one cluster's control plane.
type Config struct {
	// Name is the cluster's name: its kubeconfig context, the kube-controller-manager's
	// --cluster-name, the prefix of its processes' names.
	Name string
	// Netns is the control-plane namespace every component runs in.
	Netns string
	// Dir receives the credentials (see Start) and etcd's data.
	Dir string
	// LogDir receives one log file per component.
	LogDir   string
	Binaries Binaries
	// APIServer is the API server's address as nodes and pods reach it;
	// PublicAPIServer its address on the WAN. Both are in its serving certificate.
	APIServer, PublicAPIServer netip.AddrPort
	// ServiceCIDR is the service range; ServiceCIDRv6, if valid, makes Services
	// dual-stack.
	ServiceCIDR, ServiceCIDRv6 netip.Prefix
}

// ControlPlane is a running control plane. Its methods are safe for concurrent use.
type ControlPlane struct {
	// CA is the cluster's certificate authority; every other credential of the cluster
	// (kubelets') is issued from it too.
	CA *pki.CA
	// Kubeconfig is an admin kubeconfig for the host, through the loopback proxy.
	Kubeconfig string
	// Config and Client are an admin client for the lab process, through the same proxy.
	Config *rest.Config
	Client kubernetes.Interface

	cfg   Config
	procs proc.Set
	proxy io.Closer
}

// controllers are what kube-controller-manager runs: what a cluster's workloads need
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

// Start issues the cluster's credentials, starts etcd and the API server, waits until
// the API server is ready, and starts the controller manager and the scheduler. The
// returned ControlPlane is non-nil once anything runs, also with an error: Stop it.
func Start(ctx context.Context, cfg Config) (*ControlPlane, error) {
	c := &ControlPlane{cfg: cfg}
	if err := c.writeCredentials(); err != nil {
		return nil, fmt.Errorf("cluster %s credentials: %w", cfg.Name, err)
	}
	etcd, err := c.startEtcd()
	if err != nil {
		return c, err
	}
	apiserver, err := c.startAPIServer()
	if err != nil {
		return c, err
	}
	if err := c.startHostProxy(); err != nil {
		return c, err
	}
	if err := c.waitReady(ctx, apiserver, etcd); err != nil {
		return c, err
	}
	if _, err := c.start("kube-controller-manager", cfg.Binaries.ControllerManager,
		"--kubeconfig="+c.Path("kube-controller-manager.kubeconfig"),
		"--use-service-account-credentials",
		"--leader-elect=false",
		"--secure-port=0",
		"--cluster-name="+cfg.Name,
		"--controllers="+strings.Join(controllers, ","),
		"--root-ca-file="+c.Path("ca.crt"),
		"--concurrent-gc-syncs=5",
		// Kubelets renew their Lease every 2.5 s (nodeLeaseDurationSeconds 10); a node
		// that misses 12 s of them is NotReady.
		"--node-monitor-grace-period=12s",
		"--node-monitor-period=2s",
		"--v=1",
	); err != nil {
		return c, err
	}
	if _, err := c.start("kube-scheduler", cfg.Binaries.Scheduler,
		"--kubeconfig="+c.Path("kube-scheduler.kubeconfig"),
		"--authentication-kubeconfig="+c.Path("kube-scheduler.kubeconfig"),
		"--authorization-kubeconfig="+c.Path("kube-scheduler.kubeconfig"),
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=10259",
		"--v=1",
	); err != nil {
		return c, err
	}
	return c, nil
}

// Path is a file in the control plane's directory: ca.crt, and the kubeconfigs Start
// wrote (admin-in-lab, kube-proxy, …) for components that run elsewhere in the lab.
func (c *ControlPlane) Path(name string) string { return filepath.Join(c.cfg.Dir, name) }

func (c *ControlPlane) logPath(component string) string {
	return filepath.Join(c.cfg.LogDir, component+".log")
}

// start starts a component in the control-plane namespace, logging to its own file.
func (c *ControlPlane) start(component, bin string, args ...string) (*proc.Process, error) {
	p, err := proc.Start(c.cfg.Name+"/"+component, c.cfg.Netns, c.logPath(component), nil, append([]string{bin}, args...)...)
	if err != nil {
		return nil, err
	}
	c.procs.Add(p)
	return p, nil
}

// Processes lists the components started so far, in start order, exited ones too.
func (c *ControlPlane) Processes() []*proc.Process { return c.procs.All() }

// writeCredentials creates the cluster's CA, the API server's serving certificate,
// client certificates for the admin, the controller manager, the scheduler and
// kube-proxy, the service account signing key, and kubeconfigs for all of them.
func (c *ControlPlane) writeCredentials() error {
	cfg := c.cfg
	p, err := pki.NewCA(cfg.Name + "-ca")
	if err != nil {
		return err
	}
	c.CA = p
	serving, err := p.Issue("kube-apiserver", nil,
		[]net.IP{cfg.APIServer.Addr().AsSlice(), cfg.PublicAPIServer.Addr().AsSlice(), net.IPv4(127, 0, 0, 1), network.FirstServiceIP(cfg.ServiceCIDR).AsSlice()},
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}, true)
	if err != nil {
		return err
	}
	saKey, saPub, err := pki.ServiceAccountKey()
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"ca.crt": p.Cert, "apiserver.crt": serving.Cert, "apiserver.key": serving.Key,
		"sa.key": saKey, "sa.pub": saPub,
	}
	inLab := "https://" + cfg.APIServer.String()
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
		kp, err := p.Issue(u.cn, orgs, nil, nil, false)
		if err != nil {
			return err
		}
		switch u.file {
		case "admin-in-lab.kubeconfig":
			files["admin.crt"], files["admin.key"] = kp.Cert, kp.Key
		case "apiserver-kubelet-client.kubeconfig":
			files["apiserver-kubelet-client.crt"], files["apiserver-kubelet-client.key"] = kp.Cert, kp.Key
		}
		b, err := pki.Kubeconfig(cfg.Name, inLab, p.Cert, func(a *clientcmdapi.AuthInfo) {
			a.ClientCertificateData, a.ClientKeyData = kp.Cert, kp.Key
		})
		if err != nil {
			return err
		}
		files[u.file] = b
	}
	return pki.WriteFiles(cfg.Dir, files)
}

func (c *ControlPlane) startEtcd() (*proc.Process, error) {
	return c.start("etcd", c.cfg.Binaries.Etcd,
		"--name="+c.cfg.Name,
		"--data-dir="+c.Path("etcd"),
		"--listen-client-urls=http://127.0.0.1:2379",
		"--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380",
		"--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster="+c.cfg.Name+"=http://127.0.0.1:2380",
		// A lab's data is thrown away at the end; fsync only costs start time.
		"--unsafe-no-fsync",
		"--log-level=warn",
	)
}

// serviceRanges is the API server's --service-cluster-ip-range.
func (c *ControlPlane) serviceRanges() string {
	if c.cfg.ServiceCIDRv6.IsValid() {
		return c.cfg.ServiceCIDR.String() + "," + c.cfg.ServiceCIDRv6.String()
	}
	return c.cfg.ServiceCIDR.String()
}

func (c *ControlPlane) startAPIServer() (*proc.Process, error) {
	return c.start("kube-apiserver", c.cfg.Binaries.APIServer,
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address=0.0.0.0",
		"--secure-port=6443",
		"--advertise-address="+c.cfg.APIServer.Addr().String(),
		"--service-cluster-ip-range="+c.serviceRanges(),
		"--cert-dir="+c.Path("apiserver-certs"),
		"--tls-cert-file="+c.Path("apiserver.crt"),
		"--tls-private-key-file="+c.Path("apiserver.key"),
		"--client-ca-file="+c.Path("ca.crt"),
		"--service-account-key-file="+c.Path("sa.pub"),
		"--service-account-signing-key-file="+c.Path("sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--kubelet-client-certificate="+c.Path("apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+c.Path("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority="+c.Path("ca.crt"),
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
func (c *ControlPlane) startHostProxy() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("cluster %s host proxy: %w", c.cfg.Name, err)
	}
	fwd := &forwarder{ln: ln, dial: func(ctx context.Context) (net.Conn, error) {
		return network.DialIn(ctx, c.cfg.Netns, "tcp", c.cfg.APIServer.String())
	}}
	go fwd.serve()
	c.proxy = fwd

	host := "https://" + ln.Addr().String()
	b, err := pki.Kubeconfig(c.cfg.Name, host, c.CA.Cert, func(a *clientcmdapi.AuthInfo) {
		a.ClientCertificate, a.ClientKey = c.Path("admin.crt"), c.Path("admin.key")
	})
	if err != nil {
		return err
	}
	c.Kubeconfig = c.Path("admin.kubeconfig")
	if err := pki.WriteFiles(c.cfg.Dir, map[string][]byte{"admin.kubeconfig": b}); err != nil {
		return err
	}
	c.Config = &rest.Config{
		Host:            host,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.CA.Cert, CertFile: c.Path("admin.crt"), KeyFile: c.Path("admin.key")},
		// Tests create many objects quickly; client-side throttling only slows them.
		QPS: 200, Burst: 400,
	}
	c.Client, err = kubernetes.NewForConfig(c.Config)
	return err
}

// waitReady polls /readyz until the API server answers ok, failing fast with the log
// tail if it or etcd exits. The bound is generous: a kube-apiserver restarted on a
// loaded 2-core machine, beside other labs and builds, has taken more than 90 s to
// be ready; a failing one exits, which is caught at once.
func (c *ControlPlane) waitReady(ctx context.Context, procs ...*proc.Process) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	var last error
	for {
		for _, p := range procs {
			if p.Exited() {
				return p.ExitError()
			}
		}
		body, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil && string(body) == "ok" {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster %s API server not ready: %w (last: %v); see %s", c.cfg.Name, ctx.Err(), last, c.logPath("kube-apiserver"))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Stop ends the components in reverse start order (the scheduler and the controller
// manager, then the API server, then etcd) and closes the host proxy, so clients'
// watches end.
func (c *ControlPlane) Stop(ctx context.Context) error {
	var errs []error
	if c.proxy != nil {
		errs = append(errs, c.proxy.Close())
	}
	errs = append(errs, c.procs.StopAll(ctx))
	return errors.Join(errs...)
}
