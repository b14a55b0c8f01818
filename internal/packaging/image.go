package packaging

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ImageMeta is what the image says about itself, as OCI labels and annotations.
type ImageMeta struct {
	Version  string
	Revision string
	Created  time.Time
	// Base, when set, holds the base image of each platform; nil means scratch.
	Base v1.ImageIndex
	// BaseLayers are put under mcnet's own layer, per platform (a Debian base from
	// BuildBase), on top of Base.
	BaseLayers map[Platform][]v1.Layer
}

// labels are the org.opencontainers.image.* labels of the image config (and the
// annotations of its index).
func (m ImageMeta) labels() map[string]string {
	l := map[string]string{
		"org.opencontainers.image.title":       "mcnet",
		"org.opencontainers.image.description": "mcnet in-cluster components: controller, gateway, route agent",
		"org.opencontainers.image.source":      "https://github.com/mcnet-io/mcnet",
		"org.opencontainers.image.url":         "https://github.com/mcnet-io/mcnet",
		"org.opencontainers.image.licenses":    "Apache-2.0",
		"org.opencontainers.image.version":     m.Version,
	}
	if m.Revision != "" {
		l["org.opencontainers.image.revision"] = m.Revision
	}
	return l
}

// platformImage builds one platform's image: the base's layers and a layer holding files,
// no entrypoint (the rendered manifests set the command), User ImageUser (the manifests
// set runAsUser per component all the same: the gateway and route agent need root, the
// controller does not).
func platformImage(p Platform, files []File, meta ImageMeta) (v1.Image, error) {
	var layerBytes bytes.Buffer
	if err := writeTarGz(&layerBytes, files, meta.Created); err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerBytes.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("image layer for %s: %w", p, err)
	}
	created := v1.Time{Time: meta.Created.UTC()}
	base, err := baseImage(meta.Base, p)
	if err != nil {
		return nil, err
	}
	cfg, err := base.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("base image for %s: %w", p, err)
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS, cfg.Created = p.Arch, p.OS, created
	cfg.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cfg.Config.Labels = meta.labels()
	cfg.Config.Entrypoint, cfg.Config.Cmd, cfg.Config.User = nil, nil, ImageUser
	if cfg.RootFS.Type == "" {
		cfg.RootFS.Type = "layers"
	}
	img, err := mutate.ConfigFile(base, cfg)
	if err != nil {
		return nil, err
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for _, l := range meta.BaseLayers[p] {
		img, err = mutate.Append(img, mutate.Addendum{
			Layer:     l,
			MediaType: types.OCILayer,
			History:   v1.History{Created: created, CreatedBy: "internal/packaging: Debian packages " + strings.Join(MCNetPackages, " ")},
		})
		if err != nil {
			return nil, fmt.Errorf("image for %s: %w", p, err)
		}
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: created, CreatedBy: "hack/dist (mcnet " + meta.Version + ")"},
	})
	if err != nil {
		return nil, fmt.Errorf("image for %s: %w", p, err)
	}
	return img, nil
}

// baseImage returns the platform's image from the base index, or scratch.
func baseImage(base v1.ImageIndex, p Platform) (v1.Image, error) {
	if base == nil {
		return empty.Image, nil
	}
	m, err := base.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("base image index: %w", err)
	}
	for _, d := range m.Manifests {
		if d.Platform != nil && d.Platform.OS == p.OS && d.Platform.Architecture == p.Arch {
			return base.Image(d.Digest)
		}
		// A layout written by crane pull holds the index itself as its one entry.
		if d.MediaType.IsIndex() {
			child, err := base.ImageIndex(d.Digest)
			if err != nil {
				return nil, err
			}
			return baseImage(child, p)
		}
	}
	return nil, fmt.Errorf("base image has no %s image", p)
}

// BuildImage assembles the multi-platform image index from each platform's files.
func BuildImage(files map[Platform][]File, meta ImageMeta) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range ImagePlatforms {
		fs, ok := files[p]
		if !ok {
			continue
		}
		img, err := platformImage(p, fs, meta)
		if err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: p.OS, Architecture: p.Arch}},
		})
	}
	annotated, ok := mutate.Annotations(idx, meta.labels()).(v1.ImageIndex)
	if !ok {
		return nil, fmt.Errorf("annotate image index: unexpected type")
	}
	return annotated, nil
}

// WriteImage writes idx as an OCI image layout in dir (replacing it) and as a tarball of that
// layout at tarPath, tagged ref: index.json names it the way containerd's exporter does
// (org.opencontainers.image.ref.name is the tag, io.containerd.image.name the full
// reference), so `ctr images import`, `crane push DIR REF` and skopeo's oci: transport all
// understand it.
func WriteImage(idx v1.ImageIndex, ref name.Tag, dir, tarPath string, mtime time.Time) error {
	return WriteImages([]TaggedImage{{Index: idx, Refs: []string{ref.Name()}}}, dir, tarPath, mtime)
}

// TaggedImage is an image index with the references it goes by.
type TaggedImage struct {
	Index v1.ImageIndex
	// Refs are full references as containerd spells them: docker.io/alpine/socat:1.7.4.4.
	Refs []string
}

// WriteImages writes images into one OCI image layout in dir, sharing the blobs they
// have in common, with one index.json entry per reference, and a tarball of that layout
// at tarPath (see WriteImage). The layout is written aside and swapped in; when it equals
// the one already in dir (same index.json, so the same blobs), dir and tarPath are left
// untouched, so a registry serving them meanwhile is not disturbed.
func WriteImages(images []TaggedImage, dir, tarPath string, mtime time.Time) error {
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	if err := writeLayout(images, tmp); err != nil {
		return err
	}
	newIndex, err := os.ReadFile(filepath.Join(tmp, "index.json"))
	if err != nil {
		return err
	}
	oldIndex, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if _, terr := os.Stat(tarPath); err == nil && terr == nil && bytes.Equal(oldIndex, newIndex) {
		return nil
	}
	if err := writeLayoutTar(tmp, tarPath, mtime); err != nil {
		return err
	}
	old := tmp + ".old"
	if err := os.Rename(dir, old); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	return os.RemoveAll(old)
}

// writeLayout writes images as an OCI layout into the empty directory dir.
func writeLayout(images []TaggedImage, dir string) error {
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("write image layout: %w", err)
	}
	for _, img := range images {
		for _, ref := range img.Refs {
			tag, err := name.NewTag(ref, name.StrictValidation)
			if err != nil {
				return fmt.Errorf("image reference %q: %w", ref, err)
			}
			if err := lp.AppendIndex(img.Index, layout.WithAnnotations(map[string]string{
				"org.opencontainers.image.ref.name": tag.TagStr(),
				"io.containerd.image.name":          ref,
			})); err != nil {
				return fmt.Errorf("write image layout: %w", err)
			}
		}
	}
	return nil
}

// writeLayoutTar writes the layout in dir as a tar at tarPath (through a temporary file).
func writeLayoutTar(dir, tarPath string, mtime time.Time) error {
	var files []File
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if d.IsDir() {
			files = append(files, File{Name: filepath.ToSlash(rel) + "/", Mode: 0o755})
			return nil
		}
		data, err := os.ReadFile(p)
		files = append(files, File{Name: filepath.ToSlash(rel), Mode: 0o644, Data: data})
		return err
	})
	if err != nil {
		return fmt.Errorf("read image layout: %w", err)
	}
	f, err := os.Create(tarPath + ".tmp")
	if err != nil {
		return err
	}
	if err := errors.Join(writeTar(f, files, mtime), f.Close()); err != nil {
		return err
	}
	return os.Rename(tarPath+".tmp", tarPath)
}

// ImageUser is the config User of mcnet's image: numeric, so that a kubelet can verify
// runAsNonRoot against it, and the nonroot user of the image's /etc/passwd. The manifests
// set runAsUser for every container all the same (the controller 65532, the privileged
// gateway and route agent 0), so none depends on it.
const ImageUser = "65532:65532"
