// Package multicluster connects kubectl-mcnet to several clusters at once: it resolves
// --contexts (or finds every kubeconfig context with mcnet installed) and runs a
// function against each cluster in parallel, each with its own timeout.
package multicluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"
	appsv1 "k8s.io/api/apps/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/cmdutil"
)

// ControllerName is the Deployment whose presence marks a cluster with mcnet.
const ControllerName = "mcnet-controller"

// Scheme has every kind the plugin reads.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme, mcnetv1.AddToScheme, mcsv1alpha1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err) // only on a programming error in the scheme builders
		}
	}
	return s
}

// Target is one cluster as a kubeconfig context reaches it.
type Target struct {
	// Context is the kubeconfig context's name.
	Context string
	Config  *rest.Config
	Client  client.WithWatch
	Kube    kubernetes.Interface
}

// Options choose the clusters.
type Options struct {
	// Contexts named with --contexts; empty means discover.
	Contexts []string
	// Timeout bounds each cluster's work.
	Timeout time.Duration
}

// AddFlags registers --contexts and --cluster-timeout.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringSliceVar(&o.Contexts, "contexts", nil, "Kubeconfig contexts to work on (default: --context if set, else every context with mcnet installed)")
	fs.DurationVar(&o.Timeout, "cluster-timeout", 20*time.Second, "How long to wait for each cluster")
}

// Resolve returns the targets: --contexts, else the root's --context, else every
// context of the kubeconfig with mcnet installed. Unknown contexts are usage errors;
// finding no cluster with mcnet is a connection error (exit code 2).
func (o *Options) Resolve(ctx context.Context, flags *genericclioptions.ConfigFlags) ([]*Target, error) {
	raw, err := flags.ToRawKubeConfigLoader().RawConfig()
	if err != nil {
		return nil, cmdutil.Usage(fmt.Errorf("load kubeconfig: %w", err))
	}
	names := o.Contexts
	explicit := len(names) > 0
	if !explicit && flags.Context != nil && *flags.Context != "" {
		names, explicit = []string{*flags.Context}, true
	}
	if !explicit {
		for n := range raw.Contexts {
			names = append(names, n)
		}
		slices.Sort(names)
	}
	if len(names) == 0 {
		return nil, cmdutil.Usage(errors.New("the kubeconfig has no contexts"))
	}
	var targets []*Target
	for _, n := range names {
		if _, ok := raw.Contexts[n]; !ok {
			return nil, cmdutil.Usage(fmt.Errorf("context %q is not in the kubeconfig (contexts: %s)", n, strings.Join(contextNames(raw.Contexts), ", ")))
		}
		t, err := NewTarget(n, raw, flags)
		if err != nil {
			return nil, cmdutil.Usage(err)
		}
		targets = append(targets, t)
	}
	if explicit {
		return targets, nil
	}
	// Discovery: keep the contexts whose cluster has mcnet, asked in parallel.
	found := Parallel(ctx, targets, min(o.PerCluster(), 5*time.Second), func(ctx context.Context, t *Target) (bool, error) {
		return Installed(ctx, t.Client)
	})
	var with []*Target
	var errs []string
	for i, r := range found {
		if r.Err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", targets[i].Context, r.Err))
		}
		if r.Value {
			with = append(with, targets[i])
		}
	}
	if len(with) == 0 {
		msg := "no kubeconfig context reaches a cluster with mcnet installed; name them with --contexts"
		if len(errs) > 0 {
			msg += "\n  " + strings.Join(errs, "\n  ")
		}
		return nil, &cmdutil.ExitError{Code: cmdutil.ExitUsage, Err: errors.New(msg)}
	}
	return with, nil
}

// PerCluster is the timeout of each cluster's work.
func (o *Options) PerCluster() time.Duration {
	if o.Timeout <= 0 {
		return 20 * time.Second
	}
	return o.Timeout
}

func contextNames[V any](m map[string]V) []string {
	var out []string
	for n := range m {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// NewTarget builds clients for one context of raw, with the root's flags (user,
// server, TLS, request timeout...) applied on top.
func NewTarget(name string, raw clientcmdapiConfig, flags *genericclioptions.ConfigFlags) (*Target, error) {
	overrides := &clientcmd.ConfigOverrides{CurrentContext: name}
	if flags != nil {
		if flags.Impersonate != nil {
			overrides.AuthInfo.Impersonate = *flags.Impersonate
		}
		if flags.Timeout != nil && *flags.Timeout != "0" {
			overrides.Timeout = *flags.Timeout
		}
		if flags.Insecure != nil && *flags.Insecure {
			overrides.ClusterInfo.InsecureSkipTLSVerify = true
		}
	}
	cfg, err := clientcmd.NewNonInteractiveClientConfig(raw, name, overrides, nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("context %s: %w", name, err)
	}
	return TargetFor(name, cfg)
}

// clientcmdapiConfig is the kubeconfig type, named here to keep imports short.
type clientcmdapiConfig = clientcmdapi.Config

// TargetFor builds clients for a rest.Config.
func TargetFor(name string, cfg *rest.Config) (*Target, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = 50, 100
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		return nil, fmt.Errorf("context %s: %w", name, err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("context %s: %w", name, err)
	}
	return &Target{Context: name, Config: cfg, Client: c, Kube: kube}, nil
}

// Installed reports whether mcnet is installed: the controller Deployment or the
// Cluster CRD exists.
func Installed(ctx context.Context, c client.Client) (bool, error) {
	var d appsv1.Deployment
	err := c.Get(ctx, client.ObjectKey{Namespace: mcnetv1.SystemNamespace, Name: ControllerName}, &d)
	if err == nil {
		return true, nil
	}
	if !apierrors.IsNotFound(err) && !apierrors.IsForbidden(err) {
		return false, err
	}
	var crd apiextensionsv1.CustomResourceDefinition
	err = c.Get(ctx, client.ObjectKey{Name: "clusters." + mcnetv1.GroupVersion.Group}, &crd)
	if err == nil {
		return true, nil
	}
	if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
		return false, nil
	}
	return false, err
}

// Result is one cluster's outcome of Parallel.
type Result[T any] struct {
	Value T
	Err   error
}

// Parallel runs fn against every target at once, each under its own timeout, and
// returns the results in the targets' order.
func Parallel[T any](ctx context.Context, targets []*Target, timeout time.Duration, fn func(context.Context, *Target) (T, error)) []Result[T] {
	out := make([]Result[T], len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() {
			tctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			v, err := fn(tctx, t)
			if err != nil && tctx.Err() != nil && ctx.Err() == nil {
				err = fmt.Errorf("no answer within %s: %w", timeout, err)
			}
			out[i] = Result[T]{Value: v, Err: err}
		})
	}
	wg.Wait()
	return out
}
