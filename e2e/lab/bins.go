package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Versions of the third-party binaries the lab runs; hack/build-tools.sh pins the same.
const (
	KubeVersion = "v1.37.2"
	EtcdVersion = "v3.6.8"
	// CoreDNSBuild names the CoreDNS build hack/build-tools.sh makes (its version and
	// the plugin set, COREDNS_BUILD there).
	CoreDNSBuild = "v1.15.0+k8s.file"
)

// ErrMissingBinary is returned when a binary the lab needs has not been built.
var ErrMissingBinary = errors.New("missing binary")

// RepoRoot walks up from dir to the directory holding go.mod.
func RepoRoot(dir string) (string, error) {
	if dir == "" {
		var err error
		if dir, err = os.Getwd(); err != nil {
			return "", fmt.Errorf("find repository root: %w", err)
		}
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("find repository root: %w", err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("find repository root: no go.mod above %s", dir)
		}
	}
}

// tools locates the pinned third-party binaries under the repository's bin/.
type tools struct {
	etcd, apiserver, controllerManager, scheduler, kubelet, kubectl, proxy string
}

func findTools(root string) (tools, error) {
	k := filepath.Join(root, "bin", "k8s", KubeVersion)
	t := tools{
		etcd:              filepath.Join(root, "bin", "etcd", EtcdVersion, "etcd"),
		apiserver:         filepath.Join(k, "kube-apiserver"),
		controllerManager: filepath.Join(k, "kube-controller-manager"),
		scheduler:         filepath.Join(k, "kube-scheduler"),
		kubelet:           filepath.Join(k, "kubelet"),
		kubectl:           filepath.Join(k, "kubectl"),
		proxy:             filepath.Join(k, "kube-proxy"),
	}
	var errs []error
	for _, p := range []string{t.etcd, t.apiserver, t.controllerManager, t.scheduler, t.kubelet, t.kubectl, t.proxy} {
		if err := executable(p); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return t, fmt.Errorf("%w (run `make tools` to build them): %w", ErrMissingBinary, errors.Join(errs...))
	}
	return t, nil
}

// MissingTools reports, without starting anything, whether the binaries the lab needs
// are absent; tests use it to explain a failure before bringing anything up.
func MissingTools(root string) error {
	_, err := findTools(root)
	return err
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s: not an executable file", p)
	}
	return nil
}

// coreDNSBinary is the pinned CoreDNS build, or ErrCoreDNSNotBuilt.
func coreDNSBinary(root string) (string, error) {
	p := filepath.Join(root, "bin", "coredns", CoreDNSBuild, "coredns")
	if executable(p) != nil {
		return "", ErrCoreDNSNotBuilt
	}
	return p, nil
}
