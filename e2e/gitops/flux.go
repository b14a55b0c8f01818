package gitops

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Flux modules and where their CRDs are in them.
const (
	fluxSourceModule    = "github.com/fluxcd/source-controller"
	fluxKustomizeModule = "github.com/fluxcd/kustomize-controller"
	fluxCRDDir          = "config/crd/bases"
)

// FluxRelease is the pinned Flux: the two controllers' binaries and their CRDs.
type FluxRelease struct {
	// Version of both controllers, as pinned in hack/tools/flux-*.
	Version string
	// SourceController and KustomizeController are the built binaries.
	SourceController, KustomizeController string
	// CRDs is every CRD both controllers serve, as one YAML stream.
	CRDs []byte
}

// ErrFluxNotBuilt is returned by LoadFlux when the binaries are not in bin/.
var ErrFluxNotBuilt = errors.New("flux controllers not built: run hack/build-tools.sh flux-source-controller flux-kustomize-controller")

// LoadFlux finds the Flux controllers pinned by hack/tools/flux-source-controller and
// hack/tools/flux-kustomize-controller: binaries built into bin/ by hack/build-tools.sh,
// CRDs read from the modules in the module cache.
func LoadFlux(ctx context.Context, repoRoot string) (*FluxRelease, error) {
	src, err := PinnedModule(ctx, repoRoot, "flux-source-controller", fluxSourceModule)
	if err != nil {
		return nil, err
	}
	kc, err := PinnedModule(ctx, repoRoot, "flux-kustomize-controller", fluxKustomizeModule)
	if err != nil {
		return nil, err
	}
	rel := &FluxRelease{
		Version:             src.Version,
		SourceController:    filepath.Join(repoRoot, "bin", "flux-source-controller", src.Version, "source-controller"),
		KustomizeController: filepath.Join(repoRoot, "bin", "flux-kustomize-controller", kc.Version, "kustomize-controller"),
	}
	for _, b := range []string{rel.SourceController, rel.KustomizeController} {
		if _, err := os.Stat(b); err != nil {
			return nil, fmt.Errorf("%w (%s missing)", ErrFluxNotBuilt, b)
		}
	}
	for _, m := range []Module{src, kc} {
		y, err := ReadYAMLDir(filepath.Join(m.Dir, fluxCRDDir))
		if err != nil {
			return nil, err
		}
		rel.CRDs = append(rel.CRDs, y...)
	}
	return rel, nil
}

// FluxOptions configure one cluster's Flux.
type FluxOptions struct {
	// Kubeconfig of the cluster Flux runs against.
	Kubeconfig string
	// Dir receives the artifact storage and the controllers' logs.
	Dir string
	// RequeueDependency is how often a Kustomization waiting on dependsOn is looked at
	// again (kustomize-controller --requeue-dependency; Flux's default is 30s).
	RequeueDependency time.Duration
}

// Flux is one cluster's Flux: source-controller and kustomize-controller running as
// processes on the host, as they would run in the cluster's flux-system namespace.
// kustomize-controller downloads artifacts from source-controller's artifact server on
// loopback.
type Flux struct {
	// SourceLog and KustomizeLog are the controllers' log files (JSON lines).
	SourceLog, KustomizeLog string
	cmds                    []*exec.Cmd
	done                    []chan struct{}
}

// StartFlux starts both controllers. Stop them with Stop.
func StartFlux(rel *FluxRelease, o FluxOptions) (_ *Flux, err error) {
	storage := filepath.Join(o.Dir, "storage")
	if err := os.MkdirAll(storage, 0o755); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	artifacts := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if o.RequeueDependency == 0 {
		o.RequeueDependency = 30 * time.Second
	}
	f := &Flux{SourceLog: filepath.Join(o.Dir, "source-controller.log"), KustomizeLog: filepath.Join(o.Dir, "kustomize-controller.log")}
	defer func() {
		if err != nil {
			_ = f.Stop(context.Background())
		}
	}()
	// Metrics and health servers are off ("0"): several clusters' controllers share the
	// host's ports, and nothing scrapes them here.
	common := []string{"--metrics-addr=0", "--health-addr=0", "--log-encoding=json", "--log-level=info"}
	if err := f.start(rel.SourceController, o.Kubeconfig, f.SourceLog, append(common,
		"--storage-path="+storage, "--storage-addr="+artifacts, "--storage-adv-addr="+artifacts)...); err != nil {
		return nil, err
	}
	if err := f.start(rel.KustomizeController, o.Kubeconfig, f.KustomizeLog, append(common,
		"--requeue-dependency="+o.RequeueDependency.String(), "--no-remote-bases=true")...); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *Flux) start(bin, kubeconfig, logPath string, args ...string) error {
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "RUNTIME_NAMESPACE=flux-system")
	cmd.Stdout, cmd.Stderr = logf, logf
	// Do not outlive the test process if it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", filepath.Base(bin), err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	f.cmds, f.done = append(f.cmds, cmd), append(f.done, done)
	return nil
}

// Exited returns an error naming a controller that is no longer running.
func (f *Flux) Exited() error {
	var errs []error
	for i, c := range f.cmds {
		select {
		case <-f.done[i]:
			errs = append(errs, fmt.Errorf("%s exited: %v", filepath.Base(c.Path), c.ProcessState))
		default:
		}
	}
	return errors.Join(errs...)
}

// Stop terminates the controllers (SIGTERM, then SIGKILL after a grace period).
func (f *Flux) Stop(ctx context.Context) error {
	for i, c := range f.cmds {
		_ = c.Process.Signal(syscall.SIGTERM)
		select {
		case <-f.done[i]:
		case <-time.After(10 * time.Second):
			_ = c.Process.Kill()
			<-f.done[i]
		case <-ctx.Done():
			_ = c.Process.Kill()
			<-f.done[i]
		}
	}
	return nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
