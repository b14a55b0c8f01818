package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Image references the lab's pods use.
const (
	// SandboxImage is containerd's pause image.
	SandboxImage = "registry.k8s.io/pause:3.10"
	// NetToolsImage holds socat, netcat, dig, curl, iperf3, ip and ping; AddPod's
	// default.
	NetToolsImage = RegistryAddr + "/mcnet/nettools:lab"
	// ImageRepository and ImageTag name mcnet's image as the lab renders the fleet
	// (`--image-repository`, `--image-tag`).
	ImageRepository = RegistryAddr + "/mcnet/mcnet"
	ImageTag        = "lab"
)

// ErrNoImages says `make image` has not been run.
var ErrNoImages = errors.New("no lab images in bin/images: run `make image`")

// DefaultImages lists the image archives `make image` wrote under root/bin/images.
func DefaultImages(root string) ([]string, error) {
	tars, _ := filepath.Glob(filepath.Join(root, "bin", "images", "*.tar"))
	if len(tars) == 0 {
		return nil, ErrNoImages
	}
	return tars, nil
}

// makeRunDir creates the run's directory for sockets and mount namespaces and makes
// it a private mount of its own: a mount namespace can be kept in a file only on a
// mount that does not propagate (util-linux unshare(1)).
func (l *Lab) makeRunDir(ctx context.Context) error {
	l.runDir = filepath.Join(stateDir, l.RunID)
	if err := os.MkdirAll(l.runDir, 0o755); err != nil {
		return err
	}
	if err := syscall.Mount(l.runDir, l.runDir, "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s: %w", l.runDir, err)
	}
	if err := syscall.Mount("", l.runDir, "", syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make %s private: %w", l.runDir, err)
	}
	return nil
}

// removeRunDir detaches every namespace file under dir, then dir's own mount, and
// removes it.
func removeRunDir(dir string) error {
	if dir == "" {
		return nil
	}
	var errs []error
	mnts, _ := filepath.Glob(filepath.Join(dir, "*", "mnt"))
	for _, m := range mnts {
		if err := unmountFile(m); err != nil {
			errs = append(errs, err)
		}
	}
	if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
		errs = append(errs, fmt.Errorf("unmount %s: %w", dir, err))
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func unmountFile(path string) error {
	if err := syscall.Unmount(path, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	return nil
}
