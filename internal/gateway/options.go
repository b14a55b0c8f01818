package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	"go.uber.org/zap/zapcore"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/dataplane"
)

// Common are the flags the gateway and the route agent share; render sets them per
// cluster.
type Common struct {
	ClusterID    string
	ClusterSet   string
	PodCIDRs     []string
	ServiceCIDRs []string
	Cable        string
	CablePort    int32
	NodeName     string
	Namespace    string
	Kubeconfig   string
	StateDir     string
	LinkPrefix   string
	ChainPrefix  string
	LogLevel     int
}

// AddFlags registers the shared flags.
func (o *Common) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.ClusterID, "cluster-id", "", "this cluster's name in the fleet")
	fs.StringVar(&o.ClusterSet, "clusterset", "", "the fleet's name")
	fs.StringSliceVar(&o.PodCIDRs, "pod-cidrs", nil, "this cluster's pod CIDRs")
	fs.StringSliceVar(&o.ServiceCIDRs, "service-cidrs", nil, "this cluster's service CIDRs")
	fs.StringVar(&o.Cable, "cable", string(mcnetv1.CableWireGuard), "cable driver this cluster prefers (wireguard, vxlan)")
	fs.Int32Var(&o.CablePort, "cable-port", 0, "UDP port of this cluster's cable driver (default: the driver's)")
	fs.StringVar(&o.NodeName, "node-name", "", "this node's name (default: $NODE_NAME)")
	fs.StringVar(&o.Namespace, "namespace", "", "mcnet's namespace (default: $POD_NAMESPACE, else mcnet-system)")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, else in-cluster)")
	fs.StringVar(&o.StateDir, "state-dir", "/var/lib/mcnet", "directory for node-local state (WireGuard key, saved sysctls)")
	fs.StringVar(&o.LinkPrefix, "link-prefix", "mcnet", "prefix of the network devices mcnet creates")
	fs.StringVar(&o.ChainPrefix, "chain-prefix", "MCNET", "prefix of the iptables chains mcnet creates")
	fs.IntVarP(&o.LogLevel, "v", "v", 0, "log verbosity")
}

// Complete fills defaults from the environment, as the DaemonSets pass them.
func (o *Common) Complete() {
	if o.NodeName == "" {
		o.NodeName = os.Getenv("NODE_NAME")
	}
	if o.Namespace == "" {
		o.Namespace = os.Getenv("POD_NAMESPACE")
	}
	if o.Namespace == "" {
		o.Namespace = mcnetv1.SystemNamespace
	}
	if o.CablePort == 0 {
		o.CablePort = mcnetv1.DefaultCablePort(mcnetv1.CableDriver(o.Cable))
	}
}

// Local validates the flags and returns what they say about the local cluster.
func (o *Common) Local() (Local, error) {
	var errs []error
	if o.ClusterID == "" {
		errs = append(errs, errors.New("--cluster-id is required"))
	}
	if o.NodeName == "" {
		errs = append(errs, errors.New("--node-name or $NODE_NAME is required"))
	}
	d := mcnetv1.CableDriver(o.Cable)
	if d != mcnetv1.CableVXLAN && d != mcnetv1.CableWireGuard {
		errs = append(errs, fmt.Errorf("--cable %q: want wireguard or vxlan", o.Cable))
	}
	if o.CablePort < 1 || o.CablePort > 65535 {
		errs = append(errs, fmt.Errorf("--cable-port %d: out of range", o.CablePort))
	}
	l := Local{ClusterID: o.ClusterID, Cable: d, CablePort: o.CablePort}
	for _, s := range append(append([]string(nil), o.PodCIDRs...), o.ServiceCIDRs...) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("CIDR %q: %w", s, err))
			continue
		}
		l.CIDRs = append(l.CIDRs, p.Masked())
	}
	if len(o.PodCIDRs) == 0 {
		errs = append(errs, errors.New("--pod-cidrs is required"))
	}
	return l, errors.Join(errs...)
}

// DataplaneConfig is the dataplane configuration the flags name.
func (o *Common) DataplaneConfig() dataplane.Config {
	return dataplane.Config{LinkPrefix: o.LinkPrefix, ChainPrefix: o.ChainPrefix, StateDir: o.StateDir}
}

// RESTConfig returns the API connection: --kubeconfig, else $KUBECONFIG, else the
// in-cluster service account. Rate limits are raised: failover must not wait for the
// client's token bucket.
func (o *Common) RESTConfig() (*rest.Config, error) {
	path := o.Kubeconfig
	if path == "" {
		path = os.Getenv("KUBECONFIG")
	}
	var cfg *rest.Config
	var err error
	if path != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", path)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("API connection: %w", err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	cfg.Timeout = 10 * time.Second
	return cfg, nil
}

// Logger returns the process's logger.
func (o *Common) Logger() logr.Logger {
	return zap.New(zap.Level(zapLevel(o.LogLevel)))
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

// zapLevel maps -v N to zap's level: -N, so V(1) logs at -v 1.
func zapLevel(v int) zapcore.Level { return zapcore.Level(-v) }
