// Package multicluster connects kubectl-mcnet to several clusters at once: it resolves
// --contexts (or finds every kubeconfig context with mcnet installed) and runs a
// function against each cluster in parallel, each with its own timeout.
package multicluster

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"
	appsv1 "k8s.io/api/apps/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
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

// Resolve returns the targets and applies every kubeconfig flag of the root to each
// of them, so --user, --token, --request-timeout, --as and the rest mean the same as in
// kubectl. The clusters are:
//   - --server or --cluster alone: that one API server (with the current context's
//     credentials unless --token, --user... say otherwise), even with no kubeconfig;
//   - --contexts, else --context: those contexts;
//   - otherwise every context of the kubeconfig with mcnet installed.
//
// Unknown contexts are usage errors; finding no cluster with mcnet is a connection
// error (exit code 2).
func (o *Options) Resolve(ctx context.Context, flags *genericclioptions.ConfigFlags) ([]*Target, error) {
	if err := o.Validate(flags); err != nil {
		return nil, err
	}
	if len(o.Contexts) == 0 && (set(flags.APIServer) || set(flags.ClusterName) || set(flags.Context)) {
		// The flags pin one cluster: let cli-runtime resolve it exactly as kubectl does.
		name := deref(flags.Context)
		if name == "" {
			name = firstSet(flags.APIServer, flags.ClusterName)
		}
		t, err := TargetFor(name, flags)
		if err != nil {
			return nil, cmdutil.Usage(err)
		}
		return []*Target{t}, nil
	}
	raw, err := flags.ToRawKubeConfigLoader().RawConfig()
	if err != nil {
		return nil, cmdutil.Usage(fmt.Errorf("load kubeconfig: %w", err))
	}
	names := o.Contexts
	explicit := len(names) > 0
	if !explicit {
		for n := range raw.Contexts {
			names = append(names, n)
		}
		slices.Sort(names)
	}
	if len(names) == 0 {
		return nil, cmdutil.Usage(errors.New("the kubeconfig has no contexts; name a cluster with --kubeconfig, --context or --server"))
	}
	var targets []*Target
	for _, n := range names {
		if _, ok := raw.Contexts[n]; !ok {
			return nil, cmdutil.Usage(fmt.Errorf("context %q is not in the kubeconfig (contexts: %s)", n, strings.Join(contextNames(raw.Contexts), ", ")))
		}
		t, err := TargetFor(n, ForContext(flags, n))
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

// Validate rejects flag combinations that name the clusters twice over: --server and
// --cluster pick one API server, which cannot also be several --contexts.
func (o *Options) Validate(flags *genericclioptions.ConfigFlags) error {
	var errs []error
	if len(o.Contexts) > 0 && set(flags.Context) {
		errs = append(errs, errors.New("--context and --contexts both name the clusters; use one of them"))
	}
	if len(o.Contexts) > 1 {
		for name, v := range map[string]*string{"--server": flags.APIServer, "--cluster": flags.ClusterName} {
			if set(v) {
				errs = append(errs, fmt.Errorf("%s names one cluster but --contexts names %d; drop one of them", name, len(o.Contexts)))
			}
		}
	}
	if o.Timeout < 0 {
		errs = append(errs, fmt.Errorf("--cluster-timeout %s: use a positive duration", o.Timeout))
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return cmdutil.Usage(errors.Join(errs...))
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

func set(p *string) bool { return p != nil && *p != "" }

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func firstSet(ps ...*string) string {
	for _, p := range ps {
		if set(p) {
			return *p
		}
	}
	return ""
}

// ForContext returns a copy of the root's kubeconfig flags aimed at one context. It
// copies every exported field by reflection rather than by name so that a flag
// cli-runtime adds later is honoured too, instead of being silently dropped for
// multi-cluster verbs; the unexported caches stay fresh, so each context gets its own
// client config and discovery cache.
func ForContext(flags *genericclioptions.ConfigFlags, name string) *genericclioptions.ConfigFlags {
	out := genericclioptions.NewConfigFlags(false)
	src, dst := reflect.ValueOf(flags).Elem(), reflect.ValueOf(out).Elem()
	for i := range src.NumField() {
		if dst.Field(i).CanSet() {
			dst.Field(i).Set(src.Field(i))
		}
	}
	out.Context = &name
	return out
}

// TargetFor builds clients for what flags name. The REST mapper comes from the flags
// too, so --cache-dir holds the discovery cache as it does for kubectl.
func TargetFor(name string, flags genericclioptions.RESTClientGetter) (*Target, error) {
	cfg, err := flags.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("context %s: %w", name, err)
	}
	mapper, err := flags.ToRESTMapper()
	if err != nil {
		return nil, fmt.Errorf("context %s: %w", name, err)
	}
	return targetFor(name, cfg, mapper)
}

// TargetForConfig builds clients for a rest.Config (tests and callers that hold one).
func TargetForConfig(name string, cfg *rest.Config) (*Target, error) {
	return targetFor(name, cfg, nil)
}

func targetFor(name string, cfg *rest.Config, mapper meta.RESTMapper) (*Target, error) {
	cfg = rest.CopyConfig(cfg)
	// Show and diagnose read a dozen kinds from each cluster at once; client-go's
	// default 5 QPS would make them wait on the client, not the server.
	cfg.QPS, cfg.Burst = 50, 100
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: Scheme(), Mapper: mapper})
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
