// Package agent is the plumbing the two node agents share, the gateway and the
// route agent: their options and API connection, the cache they read through, the NetworkTests they answer, what a
// Node says about itself (addresses, health-check and public IPs), and the dataplane
// state both build from the broker's Endpoints and the fleet table.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/dataplane"
	"github.com/mcnet-io/mcnet/internal/agentconfig"
	"github.com/mcnet-io/mcnet/internal/apiroute"
)

// Common is what the gateway and the route agent share: the cluster's AgentConfig and
// the flags that are the process's own choice.
type Common struct {
	agentconfig.Process
	// Config is the cluster's AgentConfig; Complete loads it from --config when unset.
	Config      *mcnetv1.AgentConfig
	NodeName    string
	StateDir    string
	LinkPrefix  string
	ChainPrefix string
}

// AddFlags registers the shared flags.
func (o *Common) AddFlags(fs *pflag.FlagSet) {
	o.Process.AddFlags(fs)
	fs.StringVar(&o.NodeName, "node-name", "", "this node's name (default: $NODE_NAME)")
	fs.StringVar(&o.StateDir, "state-dir", "/var/lib/mcnet", "directory for node-local state (WireGuard key, saved sysctls)")
	fs.StringVar(&o.LinkPrefix, "link-prefix", "mcnet", "prefix of the network devices mcnet creates")
	fs.StringVar(&o.ChainPrefix, "chain-prefix", "MCNET", "prefix of the packet filter chains mcnet creates")
}

// Complete fills defaults from the environment, as the DaemonSets pass them, and reads
// the config file unless Config is already set.
func (o *Common) Complete() error {
	if o.NodeName == "" {
		o.NodeName = os.Getenv("NODE_NAME")
	}
	c, err := o.Process.Complete()
	if o.Config != nil {
		return nil
	}
	o.Config = c
	return err
}

// Local validates what the process knows and returns what it says about the local
// cluster.
func (o *Common) Local() (Local, error) {
	var errs []error
	if o.Config == nil {
		return Local{}, errors.New("no AgentConfig: call Complete first")
	}
	if o.NodeName == "" {
		errs = append(errs, errors.New("--node-name or $NODE_NAME is required"))
	}
	c := o.Config
	l := Local{ClusterID: c.ClusterID, Fleet: c.Fleet, Cable: c.Cable, CablePort: c.CablePort}
	for _, s := range append(append([]string(nil), c.PodCIDRs...), c.ServiceCIDRs...) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("CIDR %q: %w", s, err))
			continue
		}
		l.CIDRs = append(l.CIDRs, p.Masked())
	}
	return l, errors.Join(errs...)
}

// Start completes the options and opens what every node agent runs on: the local
// cluster's facts, its API server's REST config, and the dataplane, which the caller
// closes. In a pod the REST config reaches the API server at its own addresses, which
// it keeps reading until ctx ends, and through the ClusterIP only when they fail
// (apiroute): a node agent's heartbeat must not wait for its node's kube-proxy after
// an API-server restart.
func (o *Common) Start(ctx context.Context, log logr.Logger) (Local, *rest.Config, *dataplane.Dataplane, error) {
	if err := o.Complete(); err != nil {
		return Local{}, nil, nil, err
	}
	local, err := o.Local()
	if err != nil {
		return Local{}, nil, nil, err
	}
	cfg, err := o.RESTConfig(ctx, log)
	if err != nil {
		return Local{}, nil, nil, err
	}
	dp, err := dataplane.New(o.DataplaneConfig())
	if err != nil {
		return Local{}, nil, nil, err
	}
	return local, cfg, dp, nil
}

// DataplaneConfig is the dataplane configuration the flags name.
func (o *Common) DataplaneConfig() dataplane.Config {
	return dataplane.Config{LinkPrefix: o.LinkPrefix, ChainPrefix: o.ChainPrefix, StateDir: o.StateDir}
}

// RESTConfig returns the API connection: --kubeconfig, else $KUBECONFIG, else the
// in-cluster service account, routed to the API server's own addresses while ctx
// lasts (apiroute.Load). Rate limits are raised: failover must not wait for the
// client's token bucket.
func (o *Common) RESTConfig(ctx context.Context, log logr.Logger) (*rest.Config, error) {
	cfg, err := apiroute.Load(ctx, log, o.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("API connection: %w", err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	cfg.Timeout = 10 * time.Second
	return cfg, nil
}

// Scheme knows the built-in kinds and mcnet's.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = mcnetv1.AddToScheme(s)
	return s
}

// Uninstalling reports whether the workload this process belongs to is being removed
// (its DaemonSet is gone or deleting, or its service account or RBAC already is), in
// which case the process removes its kernel state on the way out. A plain restart
// finds the DaemonSet and keeps the kernel state, so traffic keeps flowing. An
// unreachable API server counts as a restart.
func Uninstalling(ctx context.Context, kube kubernetes.Interface, namespace, daemonSet string) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	ds, err := kube.AppsV1().DaemonSets(namespace).Get(ctx, daemonSet, metav1.GetOptions{})
	switch {
	case err == nil:
		return ds.DeletionTimestamp != nil
	case apierrors.IsNotFound(err), apierrors.IsUnauthorized(err), apierrors.IsForbidden(err):
		return true
	}
	return false
}
