package conformance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Files a run leaves in its output directory.
const (
	// ReportJSON is Ginkgo's JSON report, which ReadReport reads.
	ReportJSON = "report.json"
	// ReportJUnit is Ginkgo's JUnit report, for CI systems.
	ReportJUnit = "junit.xml"
	// SuiteLog is the suite's verbose output.
	SuiteLog = "suite.log"
	// Kubeconfig is the merged kubeconfig when the clusters came as separate files.
	Kubeconfig = "kubeconfig"
)

// The suite also writes report.html and report.yaml, its own conformance report, into
// its working directory, which is the output directory.

// Options say how to run the suite.
type Options struct {
	// Suite is the suite's test binary (go test -c sigs.k8s.io/mcs-api/conformance).
	Suite string
	// Kubeconfig holds a context per cluster; Contexts names them, the first being
	// the cluster the suite exports from.
	Kubeconfig string
	Contexts   []string
	// OutDir receives the reports and the log; it is created.
	OutDir string
	// LabelFilter is a Ginkgo label filter (-ginkgo.label-filter); empty runs every spec.
	LabelFilter string
	// Domain is the clusterset DNS domain; empty leaves the suite's clusterset.local.
	Domain string
	// Version is the mcnet version recorded in the suite's report.
	Version string
	// Timeout bounds the whole run (the suite's -test.timeout); zero means an hour.
	Timeout time.Duration
	// Progress, when set, also receives the suite's output as it runs.
	Progress io.Writer
}

// Args are the suite's command-line arguments. Report paths are absolute: the suite
// runs in OutDir.
func (o Options) Args() ([]string, error) {
	out, err := filepath.Abs(o.OutDir)
	if err != nil {
		return nil, err
	}
	kc, err := filepath.Abs(o.Kubeconfig)
	if err != nil {
		return nil, err
	}
	timeout := o.Timeout
	if timeout == 0 {
		timeout = time.Hour
	}
	args := []string{
		"-test.v", "-test.timeout=" + timeout.String(),
		"-kubeconfig=" + kc,
		"-contexts=" + strings.Join(o.Contexts, ","),
		"-ginkgo.json-report=" + filepath.Join(out, ReportJSON),
		"-ginkgo.junit-report=" + filepath.Join(out, ReportJUnit),
		"-ginkgo.no-color",
		"-ginkgo.timeout=" + timeout.String(),
		"-organization=mcnet", "-project=mcnet", "-url=https://github.com/mcnet-io/mcnet",
	}
	if o.Version != "" {
		args = append(args, "-version="+o.Version)
	}
	if o.Domain != "" {
		args = append(args, "-dns-domain="+o.Domain)
	}
	if o.LabelFilter != "" {
		args = append(args, "-ginkgo.label-filter="+o.LabelFilter)
	}
	return args, nil
}

// Validate reports every problem with the options at once.
func (o Options) Validate() error {
	var errs []error
	if fi, err := os.Stat(o.Suite); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		errs = append(errs, fmt.Errorf("suite binary %q is not an executable file (hack/build-tools.sh mcs-conformance builds it)", o.Suite))
	}
	if o.OutDir == "" {
		errs = append(errs, errors.New("no output directory"))
	}
	if len(o.Contexts) < 1 {
		errs = append(errs, errors.New("no contexts: the suite needs one per cluster, at least two for most specs"))
	}
	cfg, err := clientcmd.LoadFromFile(o.Kubeconfig)
	if err != nil {
		errs = append(errs, fmt.Errorf("kubeconfig: %w", err))
	} else {
		for _, c := range o.Contexts {
			if _, ok := cfg.Contexts[c]; !ok {
				errs = append(errs, fmt.Errorf("kubeconfig %s has no context %q", o.Kubeconfig, c))
			}
		}
	}
	return errors.Join(errs...)
}

// Run runs the suite and reads its report. Failing specs are not an error: they are in
// the specs returned. An error means there is no report to read (the suite could not
// start, or was killed before it wrote one).
func Run(ctx context.Context, o Options) ([]Spec, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", o.OutDir, err)
	}
	for _, f := range []string{ReportJSON, ReportJUnit} {
		if err := os.Remove(filepath.Join(o.OutDir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	args, err := o.Args()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(o.OutDir, SuiteLog))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	var w io.Writer = logf
	if o.Progress != nil {
		w = io.MultiWriter(logf, o.Progress)
	}
	suite, err := filepath.Abs(o.Suite)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, suite, args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = o.OutDir, w, w
	runErr := cmd.Run()
	f, err := os.Open(filepath.Join(o.OutDir, ReportJSON))
	if err != nil {
		return nil, fmt.Errorf("the suite left no report (%v; its output is in %s): %w", runErr, filepath.Join(o.OutDir, SuiteLog), err)
	}
	defer f.Close()
	return ReadReport(f)
}

// MergeKubeconfigs writes one kubeconfig with a context per cluster, named after the
// cluster, from one kubeconfig file per cluster (each file's current context is used).
// The suite names clusters after their contexts' clusters, so those are renamed too.
func MergeKubeconfigs(out string, clusters map[string]string, order []string) error {
	merged := clientcmdapi.NewConfig()
	for _, name := range order {
		path, ok := clusters[name]
		if !ok {
			return fmt.Errorf("no kubeconfig for cluster %s", name)
		}
		cfg, err := clientcmd.LoadFromFile(path)
		if err != nil {
			return fmt.Errorf("read kubeconfig of %s: %w", name, err)
		}
		// Certificate and key files named relative to the source file stay readable.
		if err := clientcmd.ResolveLocalPaths(cfg); err != nil {
			return fmt.Errorf("kubeconfig of %s: %w", name, err)
		}
		ctx, ok := cfg.Contexts[cfg.CurrentContext]
		if !ok {
			return fmt.Errorf("kubeconfig %s of %s has no current context", path, name)
		}
		cl, ok := cfg.Clusters[ctx.Cluster]
		if !ok {
			return fmt.Errorf("kubeconfig %s of %s: context %s names no cluster", path, name, cfg.CurrentContext)
		}
		user, ok := cfg.AuthInfos[ctx.AuthInfo]
		if !ok {
			return fmt.Errorf("kubeconfig %s of %s: context %s names no user", path, name, cfg.CurrentContext)
		}
		merged.Clusters[name], merged.AuthInfos[name] = cl, user
		merged.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name, Namespace: ctx.Namespace}
	}
	if len(order) > 0 {
		merged.CurrentContext = order[0]
	}
	if err := clientcmd.WriteToFile(*merged, out); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	return nil
}
