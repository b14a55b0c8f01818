package lab

import (
	"path"

	"context"
	"errors"
	"fmt"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/mcnet-io/mcnet/e2e/lab/node"
	"os"
	"path/filepath"
	"syscall"
)

// SandboxImage is containerd's pause image, served by the lab's registry.
const SandboxImage = "registry.k8s.io/pause:3.10"

// ErrNoImages says `make image` has not been run.
var ErrNoImages = errors.New("no images in bin/images: run `make image`")

// Images are the references of the images `make image` built, as the lab serves them.
type Images struct {
	// MCNet is mcnet's component image; Repository and Tag split it, for the fleet's
	// spec.image (what `kubectl mcnet render --image-repository --image-tag` sets).
	MCNet, Repository, Tag string
	// NetTools is the network-tools image (socat, curl, dig, iperf3, ip, ping, a small
	// HTTP server); AddPod's default.
	NetTools string
	// Layouts are the OCI layouts the registry serves.
	Layouts []string
}

// FindImages reads the OCI layouts `make image` wrote under root/bin/images and picks
// out mcnet's image and the network tools by repository name.
func FindImages(root string) (Images, error) {
	var im Images
	layouts, _ := filepath.Glob(filepath.Join(root, "bin", "images", "*-oci"))
	for _, dir := range layouts {
		idx, err := layout.ImageIndexFromPath(dir)
		if err != nil {
			return im, fmt.Errorf("image layout %s: %w", dir, err)
		}
		m, err := idx.IndexManifest()
		if err != nil {
			return im, fmt.Errorf("image layout %s: %w", dir, err)
		}
		im.Layouts = append(im.Layouts, dir)
		for _, d := range m.Manifests {
			ref, err := name.NewTag(d.Annotations["io.containerd.image.name"], name.WeakValidation)
			if err != nil {
				continue
			}
			switch path.Base(ref.RepositoryStr()) {
			case "mcnet":
				im.MCNet, im.Repository, im.Tag = ref.Name(), ref.Context().Name(), ref.TagStr()
			case "nettools":
				im.NetTools = ref.Name()
			}
		}
	}
	if im.MCNet == "" || im.NetTools == "" {
		return im, ErrNoImages
	}
	return im, nil
}

// Images are the images the lab serves.
func (l *Lab) Images() Images { return l.imageRefs }

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
		if err := node.Unmount(m); err != nil {
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
