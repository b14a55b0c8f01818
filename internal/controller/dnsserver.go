package controller

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/agentconfig"
	"github.com/mcnet-io/mcnet/internal/apiroute"
	"github.com/mcnet-io/mcnet/internal/dns"
	"github.com/mcnet-io/mcnet/internal/patient"
	"github.com/mcnet-io/mcnet/internal/version"
)

// DNSOptions configure mcnet-dns, the clusterset DNS server: the cluster's AgentConfig
// and the flags that are this process's own choice. It needs no broker credentials
// and elects no leader: every replica answers from the local cluster's objects.
type DNSOptions struct {
	agentconfig.Process
	// Config is the cluster's AgentConfig; Complete loads it from --config when unset.
	Config         *mcnetv1.AgentConfig
	BindAddress    string
	MetricsAddress string
	ProbeAddress   string
	// ShutdownDelay is how long a stopping replica keeps answering, not ready, before
	// it stops. CoreDNS forwards over pooled UDP sockets that stay in use, so their
	// conntrack flows stay pinned to this replica while it terminates; kube-proxy
	// deletes them only once the pod is marked not ready (serving=false), which takes
	// the readiness probe's failures (2 s as rendered) and a kube-proxy sync on every
	// node. Stopping before that leaves those flows leading to a dead address until
	// the pod's deletion reaches every node: questions time out and CoreDNS answers
	// SERVFAIL. CoreDNS's own lameduck is the same idea.
	ShutdownDelay time.Duration
}

// DefaultDNSShutdownDelay covers the rendered readiness probe's two failures a second
// apart, the EndpointSlice update and a kube-proxy sync (rate-limited to one a second)
// on a loaded node, with room to spare; the pod's termination grace is 30 s.
const DefaultDNSShutdownDelay = 10 * time.Second

// AddFlags registers the options on fs.
func (o *DNSOptions) AddFlags(fs *pflag.FlagSet) {
	o.Process.AddFlags(fs)
	fs.StringVar(&o.BindAddress, "dns-bind-address", ":5353", "address the clusterset DNS server listens on (UDP and TCP)")
	fs.StringVar(&o.MetricsAddress, "metrics-bind-address", ":9453", "address of the Prometheus metrics endpoint; 0 disables it")
	fs.StringVar(&o.ProbeAddress, "health-probe-bind-address", ":9454", "address of /healthz and /readyz; 0 disables it")
	fs.DurationVar(&o.ShutdownDelay, "shutdown-delay", DefaultDNSShutdownDelay, "how long a stopping server keeps answering, not ready, while every node's kube-proxy moves its flows to other replicas (lame duck); 0 stops at once")
}

// Complete fills in defaults from the environment and reads the config file, unless
// Config is already set.
func (o *DNSOptions) Complete() error {
	c, err := o.Process.Complete()
	if o.Config != nil {
		return nil
	}
	o.Config = c
	return err
}

// Validate reports options that cannot work.
func (o *DNSOptions) Validate() error {
	if o.Config == nil {
		return errors.New("no AgentConfig: call DNSOptions.Complete first")
	}
	if o.BindAddress == "" || o.BindAddress == "0" {
		return errors.New("--dns-bind-address: empty; give the address to serve DNS on, e.g. :5353")
	}
	if o.ShutdownDelay < 0 || o.ShutdownDelay > 25*time.Second {
		return fmt.Errorf("--shutdown-delay=%s: want 0 to 25s (the pod's termination grace is 30s)", o.ShutdownDelay)
	}
	return nil
}

// RunDNS serves the clusterset domain from the local cluster's ServiceImports,
// EndpointSlices and Gateways until ctx ends. o must be complete.
func RunDNS(ctx context.Context, o DNSOptions) error {
	if err := o.Validate(); err != nil {
		return err
	}
	scheme, err := Scheme()
	if err != nil {
		return err
	}
	cfg, err := apiroute.Load(ctx, log.FromContext(ctx), o.Kubeconfig)
	if err != nil {
		return fmt.Errorf("connect to this cluster: %w", err)
	}
	localInformers, err := patient.ForConfig(cfg)
	if err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: o.MetricsAddress},
		HealthProbeBindAddress: o.ProbeAddress,
		Controller:             config.Controller{SkipNameValidation: ptr(true)},
		Cache: cache.Options{NewInformer: localInformers, ByObject: map[client.Object]cache.ByObject{
			&mcnetv1.Gateway{}: {Namespaces: map[string]cache.Config{o.Namespace: {}}},
		}},
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	index := dns.NewIndex()
	src := &dns.Source{Index: index, Client: mgr.GetClient(), Namespace: o.Namespace, Fleet: o.Config.Fleet, ClusterID: o.Config.ClusterID, APIReader: mgr.GetAPIReader()}
	if err := src.SetupWithManager(mgr); err != nil {
		return err
	}
	domain := o.Config.Discovery.Domain
	server := dns.NewServer(domain, o.Config.ClusterID, index)
	// The server starts listening once the cache has synced and the index holds every
	// import, so it never answers NXDOMAIN for a name it merely has not read yet.
	var serving, draining atomic.Bool
	if err := mgr.Add(nonLeader(func(ctx context.Context) error {
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return ctx.Err()
		}
		if err := src.Sync(ctx); err != nil {
			return err
		}
		log.FromContext(ctx).Info("serving DNS", "domain", domain, "address", o.BindAddress)
		serving.Store(true)
		return server.ListenAndServe(ctx, o.BindAddress)
	})); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("dns", func(*http.Request) error {
		if draining.Load() {
			return errors.New("shutting down")
		}
		if !serving.Load() {
			return errors.New("DNS server not serving yet")
		}
		return nil
	}); err != nil {
		return err
	}
	log.FromContext(ctx).Info("starting mcnet DNS", "version", version.Version, "cluster", o.Config.ClusterID, "domain", domain)
	return mgr.Start(lameDuck(ctx, o.ShutdownDelay, &draining))
}

// lameDuck returns a context that ends delay after ctx does, with draining set in
// between: the server goes on answering while /readyz says it is shutting down.
func lameDuck(ctx context.Context, delay time.Duration, draining *atomic.Bool) context.Context {
	if delay <= 0 {
		return ctx
	}
	run, stop := context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		<-ctx.Done()
		draining.Store(true)
		log.FromContext(ctx).Info("Stopping: answering while the Service drops this replica", "for", delay)
		time.Sleep(delay)
		stop()
	}()
	return run
}

// nonLeader runs f in every replica, leader or not.
type nonLeader func(ctx context.Context) error

func (f nonLeader) Start(ctx context.Context) error { return f(ctx) }

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (nonLeader) NeedLeaderElection() bool { return false }

var _ manager.LeaderElectionRunnable = nonLeader(nil)
