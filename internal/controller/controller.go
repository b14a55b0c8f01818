// Package controller runs mcnet's per-cluster controller: it announces the cluster, keeps
// it in step with the broker, and (with the discovery reconcilers) serves the clusterset
// domain. cmd/mcnet-controller only parses flags and calls Run; who the cluster is comes
// from its AgentConfig.
package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/controllers/brokersync"
	"github.com/mcnet-io/mcnet/internal/agentconfig"
	"github.com/mcnet-io/mcnet/internal/apiroute"
	"github.com/mcnet-io/mcnet/internal/naming"
	"github.com/mcnet-io/mcnet/internal/patient"
	"github.com/mcnet-io/mcnet/internal/version"
)

// Options configure the controller: the cluster's AgentConfig, and the flags that are
// this process's own choice.
type Options struct {
	agentconfig.Process
	// Config is the cluster's AgentConfig; Complete loads it from --config when unset.
	Config *mcnetv1.AgentConfig
	// BrokerKubeconfig holds this cluster's broker credentials (the mounted Secret).
	BrokerKubeconfig string
	MetricsAddress   string
	ProbeAddress     string
	LeaderElect      bool
}

// AddFlags registers the options on fs.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	o.Process.AddFlags(fs)
	fs.StringVar(&o.BrokerKubeconfig, "broker-kubeconfig", "/var/run/mcnet/broker/kubeconfig", "kubeconfig with this cluster's broker credentials")
	fs.StringVar(&o.MetricsAddress, "metrics-bind-address", ":9450", "address of the Prometheus metrics endpoint; 0 disables it")
	fs.StringVar(&o.ProbeAddress, "health-probe-bind-address", ":9451", "address of /healthz and /readyz; 0 disables it")
	fs.BoolVar(&o.LeaderElect, "leader-elect", true, "elect one active controller through a Lease")
}

// Complete fills in defaults from the environment and reads the config file, unless
// Config is already set.
func (o *Options) Complete() error {
	c, err := o.Process.Complete()
	if o.Config != nil {
		return nil
	}
	o.Config = c
	return err
}

// Scheme returns the types the controller reads and writes.
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, mcnetv1.AddToScheme, mcsv1alpha1.AddToScheme} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Run starts the controller and blocks until ctx ends. o must be complete.
//
// An error while this cluster's own API server does not answer is the outage's, not
// the controller's, and so is a lost leadership: Run waits in-process until the API
// server answers and starts over, so an outage never becomes a crash loop whose
// back-off outlasts it (a broker cluster's controller loses its own API server in
// every broker outage). Any other error is returned. The probe and metrics servers
// are Run's, not a manager's: /healthz answers while Run waits, and /readyz says
// whether a manager runs with its local cache synced.
func Run(ctx context.Context, o Options) error {
	logger := log.FromContext(ctx)
	if o.Config == nil {
		return errors.New("no AgentConfig: call Options.Complete first")
	}
	cfg, err := apiroute.Load(ctx, log.FromContext(ctx), o.Kubeconfig)
	if err != nil {
		return fmt.Errorf("connect to this cluster: %w", err)
	}
	localReady, err := patient.ReadyProbe(cfg)
	if err != nil {
		return err
	}
	p := &probes{why: "starting"}
	stopProbes, err := serve(o.ProbeAddress, p.handler())
	if err != nil {
		return fmt.Errorf("serve health probes (--health-probe-bind-address): %w", err)
	}
	defer stopProbes()
	stopMetrics, err := serve(o.MetricsAddress, metricsHandler())
	if err != nil {
		return fmt.Errorf("serve metrics (--metrics-bind-address): %w", err)
	}
	defer stopMetrics()
	answers := func(ctx context.Context) bool {
		ctx, cancel := context.WithTimeout(ctx, readyzTimeout)
		defer cancel()
		return localReady(ctx) == nil
	}
	for {
		err := run(ctx, o, cfg, p)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		if !isLeaderLost(err) && answers(ctx) {
			return err
		}
		p.stopped("waiting to start over once this cluster's API server answers: " + err.Error())
		logger.Info("Stopped with this cluster's API server away or the leadership lost; starting over once the API server answers", "error", err.Error())
		_ = wait.PollUntilContextCancel(ctx, restartPoll, true, func(ctx context.Context) (bool, error) { return answers(ctx), nil })
	}
}

// isLeaderLost says whether err is the manager's report of a lost leader election
// (controller-runtime has no sentinel for it).
func isLeaderLost(err error) bool {
	return strings.Contains(err.Error(), "leader election lost")
}

// run is one manager's life: set up, then run until ctx ends or it fails.
func run(ctx context.Context, o Options, cfg *rest.Config, p *probes) error {
	logger := log.FromContext(ctx)
	p.stopped("starting")
	scheme, err := Scheme()
	if err != nil {
		return err
	}
	brokerCfg, err := clientcmd.BuildConfigFromFlags("", o.BrokerKubeconfig)
	if err != nil {
		return fmt.Errorf("read broker credentials %s (create them with kubectl mcnet broker credentials --cluster %s): %w", o.BrokerKubeconfig, o.Config.ClusterID, err)
	}
	localInformers, err := patient.ForConfig(cfg)
	if err != nil {
		return err
	}
	// A standby replica takes over within leaseDuration of the leader's death (its
	// node powered off); a lost leadership restarts in-process (Run), so the short
	// Lease costs no crash loop when the API server is slow.
	leaseDuration, renew, retry := 4*time.Second, 3*time.Second, 500*time.Millisecond
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: scheme,
		// Run serves both, across manager runs.
		Metrics:                       metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:        "0",
		LeaderElection:                o.LeaderElect,
		LeaderElectionID:              "mcnet-controller",
		LeaderElectionNamespace:       o.Namespace,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &leaseDuration,
		RenewDeadline:                 &renew,
		RetryPeriod:                   &retry,
		// One manager per process in a cluster; tests run several side by side. The
		// broker's informers wait out an outage however long it lasts (patient); a
		// controller must not give up on them and exit, or a restart during the outage
		// becomes a crash loop.
		Controller: config.Controller{SkipNameValidation: ptr(true), CacheSyncTimeout: waitForever},
		// The broker's cluster loses its own API server in a broker outage; its
		// informers must resume as soon as it is back.
		Cache: cache.Options{NewInformer: localInformers, ByObject: map[client.Object]cache.ByObject{
			&mcnetv1.Cluster{}:  {Namespaces: map[string]cache.Config{o.Namespace: {}}},
			&mcnetv1.Endpoint{}: {Namespaces: map[string]cache.Config{o.Namespace: {}}},
			&mcnetv1.Gateway{}:  {Namespaces: map[string]cache.Config{o.Namespace: {}}},
		}},
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	brokerReady, err := patient.ReadyProbe(brokerCfg)
	if err != nil {
		return err
	}
	broker, err := cluster.New(brokerCfg, func(co *cluster.Options) {
		co.Scheme = scheme
		co.Cache.DefaultNamespaces = map[string]cache.Config{o.Config.Broker.Namespace: {}}
		co.Cache.NewInformer = patient.Informers(brokerReady, time.Second)
	})
	if err != nil {
		return fmt.Errorf("connect to the broker: %w", err)
	}
	// Not added as a cache the manager waits for before it starts anything: the broker
	// may be down, and the local work must not wait for it.
	if err := mgr.Add(brokerCache{broker}); err != nil {
		return err
	}
	owner, err := brokerOwner(ctx, brokerCfg, o)
	if err != nil {
		// Without it, objects are still published; they just are not garbage-collected
		// when the cluster leaves the fleet.
		logger.Info("broker identity not readable; published objects will not be garbage-collected", "error", err.Error())
	}
	if err := (&brokersync.Syncer[*mcnetv1.Cluster]{
		Kind: brokersync.Clusters, ClusterID: o.Config.ClusterID, Local: mgr.GetClient(), LocalNamespace: o.Namespace,
		Broker: broker, BrokerNamespace: o.Config.Broker.Namespace, Owner: owner,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&brokersync.Syncer[*mcnetv1.Endpoint]{
		Kind: brokersync.Endpoints, ClusterID: o.Config.ClusterID, Local: mgr.GetClient(), LocalNamespace: o.Namespace,
		Broker: broker, BrokerNamespace: o.Config.Broker.Namespace, Owner: owner,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := setupDiscovery(mgr, broker, owner, o); err != nil {
		return err
	}
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		return announce(ctx, mgr.GetClient(), o, brokerReady)
	})); err != nil {
		return err
	}
	// Ready means the local cache is synced, checked within a bound. The broker is not
	// part of it: its reachability is the Cluster's BrokerConnected condition, and a
	// broker outage must not stall a rollout (a fix to the broker credentials, say).
	p.running(func(ctx context.Context) error {
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return errors.New("local cache not synced")
		}
		return nil
	})
	defer p.stopped("stopped")
	logger.Info("starting mcnet controller", "version", version.Version, "cluster", o.Config.ClusterID, "brokerNamespace", o.Config.Broker.Namespace)
	return mgr.Start(ctx)
}

const (
	// waitForever is the controllers' cache sync timeout: in effect none.
	waitForever = 100 * 365 * 24 * time.Hour
	// readyzTimeout bounds every readiness check.
	readyzTimeout = time.Second
	// restartPoll is how often Run asks whether the API server is back.
	restartPoll = time.Second
	// brokerOwnerTimeout bounds the start-up read of the broker identity.
	brokerOwnerTimeout = 5 * time.Second
)

// brokerCache runs the broker's cache as one of the leader's runnables, which the
// manager starts without waiting for it to sync. It must not have a GetCache method:
// the manager would wait for any runnable with one to sync before starting the rest.
type brokerCache struct{ c cluster.Cluster }

// Start implements manager.Runnable.
func (b brokerCache) Start(ctx context.Context) error { return b.c.Start(ctx) }

// NeedLeaderElection implements manager.LeaderElectionRunnable: only the leader
// writes to the broker and reads from it.
func (brokerCache) NeedLeaderElection() bool { return true }

// brokerOwner returns an owner reference to this cluster's ServiceAccount on the broker.
func brokerOwner(ctx context.Context, cfg *rest.Config, o Options) (*metav1.OwnerReference, error) {
	ctx, cancel := context.WithTimeout(ctx, brokerOwnerTimeout)
	defer cancel()
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return nil, err
	}
	var sa corev1.ServiceAccount
	if err := c.Get(ctx, client.ObjectKey{Namespace: o.Config.Broker.Namespace, Name: naming.BrokerServiceAccount(o.Config.ClusterID)}, &sa); err != nil {
		return nil, err
	}
	return &metav1.OwnerReference{APIVersion: "v1", Kind: "ServiceAccount", Name: sa.Name, UID: sa.UID}, nil
}

// Condition types on the local Cluster's status.
const (
	// ConditionBrokerConnected says whether the broker's API server answers this
	// cluster's controller; when False, remote changes stop arriving (existing tunnels
	// keep working).
	ConditionBrokerConnected = "BrokerConnected"
	// ConditionReady is kstatus' summary: announced and connected to the broker.
	ConditionReady = "Ready"
)

// announce keeps this cluster's own Cluster object as its config describes it, and its
// status saying whether the broker answers.
func announce(ctx context.Context, c client.Client, o Options, brokerReady func(context.Context) error) error {
	want := brokersync.LocalCluster(o.Namespace, mcnetv1.ClusterObjSpec{
		ClusterID:    o.Config.ClusterID,
		PodCIDRs:     o.Config.PodCIDRs,
		ServiceCIDRs: o.Config.ServiceCIDRs,
		Cable:        o.Config.Cable,
		Version:      version.Version,
	})
	// Poll the cache rather than wait for events: the object may not exist yet, and
	// someone may edit or delete it later.
	_ = wait.PollUntilContextCancel(ctx, 2*time.Second, true, func(ctx context.Context) (bool, error) {
		var have mcnetv1.Cluster
		err := c.Get(ctx, client.ObjectKeyFromObject(want), &have)
		switch {
		case apierrors.IsNotFound(err):
			err = c.Create(ctx, want.DeepCopy())
		case err == nil && !equality.Semantic.DeepEqual(have.Spec, want.Spec):
			have.Spec = want.Spec
			err = c.Update(ctx, &have)
		case err == nil:
			err = reportBroker(ctx, c, &have, brokerReady)
		}
		if err != nil {
			log.FromContext(ctx).Error(err, "announce this cluster")
		}
		return false, nil
	})
	return nil
}

// reportBroker sets the BrokerConnected and Ready conditions from a probe of the
// broker's /readyz, writing only when they change.
func reportBroker(ctx context.Context, c client.Client, cl *mcnetv1.Cluster, brokerReady func(context.Context) error) error {
	probe, cancel := context.WithTimeout(ctx, 2*time.Second)
	err := brokerReady(probe)
	cancel()
	conn := metav1.Condition{Type: ConditionBrokerConnected, Status: metav1.ConditionTrue, Reason: "BrokerReachable",
		Message: "the broker's API server answers", ObservedGeneration: cl.Generation}
	if err != nil {
		conn.Status, conn.Reason = metav1.ConditionFalse, "BrokerUnreachable"
		conn.Message = "the broker's API server does not answer: " + err.Error() + "; existing tunnels keep working, remote changes wait"
	}
	ready := conn
	ready.Type = ConditionReady
	changed := meta.SetStatusCondition(&cl.Status.Conditions, conn)
	changed = meta.SetStatusCondition(&cl.Status.Conditions, ready) || changed
	if !changed {
		return nil
	}
	return c.Status().Update(ctx, cl)
}

func ptr[T any](v T) *T { return &v }
