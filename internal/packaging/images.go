package packaging

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
)

// The references the lab serves besides mcnet's own, and why.
const (
	// SocatRef and NetshootRef are the images the MCS API conformance suite
	// (sigs.k8s.io/mcs-api/conformance, k8s_objects.go) runs: the service pods run
	// `/bin/sh -c <script>` (grep -E, tr, awk, socat) in alpine/socat, the client execs
	// `sh -c "nc ..."` and `nslookup -type=...` in netshoot, whose args start with /bin/sh.
	SocatRef    = "docker.io/alpine/socat:1.7.4.4"
	NetshootRef = "docker.io/nicolaka/netshoot:v0.15"
	// SandboxRef is the sandbox_image of Debian's containerd 1.6.20
	// (`containerd config default`); PauseRefs adds what newer containerd and kubeadm
	// name.
	SandboxRef = "registry.k8s.io/pause:3.6"
)

// PauseRefs are the references the pause image is served as.
var PauseRefs = []string{SandboxRef, "registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10.1"}

// ImagesOptions says where BuildImages writes and what it stamps.
type ImagesOptions struct {
	// Root is the repository root (cmd/ and internal/imagecmd/ are built from it).
	Root string
	// OutDir receives the layouts and archives (bin/images).
	OutDir string
	// CacheDir keeps downloaded Debian packages, foreign package lists and built bases
	// (bin/debian).
	CacheDir string
	// Platform is the images' platform; the default is linux on this machine's arch.
	Platform Platform
	// Version and Commit are stamped into the binaries; Version (normalized) is the
	// default tag of mcnet's own images.
	Version, Commit string
	// ImageRepository and ImageTag name mcnet's component image (default
	// DefaultImageRepository and the version); the network-tools and pause images are
	// named beside it (…/nettools, …/pause, same tag).
	ImageRepository, ImageTag string
	// Epoch is every file's mtime and the images' creation time.
	Epoch time.Time
	// Log receives one line per step (nil: discarded).
	Log io.Writer
}

// LabImage is one image BuildImages wrote, and the references to serve it as.
type LabImage struct {
	// Name says which image it is: mcnet, nettools, alpine-socat, netshoot, pause.
	Name string
	// Layout is the OCI image layout holding it; its index.json has one entry per ref,
	// annotated with io.containerd.image.name (images of one layout share blobs).
	Layout string
	// Archive is the tar of Layout, for `ctr -n k8s.io images import` (which imports
	// every image in it under its io.containerd.image.name).
	Archive string
	// Refs are the full references the image goes by.
	Refs []string
	// Digest is the image index's digest.
	Digest v1.Hash
	// Size is what a pull transfers: manifests, config and compressed layers.
	Size int64
	// Config is the image's entrypoint, command, user and environment.
	Config v1.Config
}

// LabImages builds (or, for what did not change, reuses) the images the lab serves, the
// way `make image` does: under root/bin/images, with the Debian packages cached under
// root/bin/debian, stamped with `git describe` of root.
func LabImages(ctx context.Context, root string) ([]LabImage, error) {
	version, commit := gitVersion(ctx, root)
	return BuildImages(ctx, ImagesOptions{
		Root:     root,
		OutDir:   filepath.Join(root, "bin", "images"),
		CacheDir: filepath.Join(root, "bin", "debian"),
		Version:  version,
		Commit:   commit,
	})
}

// gitVersion is what the Makefile stamps: git describe and the short commit.
func gitVersion(ctx context.Context, root string) (version, commit string) {
	git := func(args ...string) string {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(out))
	}
	return git("describe", "--tags", "--always", "--dirty"), git("rev-parse", "--short", "HEAD")
}

// BuildImages builds for one platform, reproducibly (same sources, package versions and
// epoch: same digests):
//
//	OutDir/mcnet-oci/, mcnet.tar         mcnet's components on the mcnet Debian base
//	                                     (iptables in both modes, nonroot user 65532)
//	OutDir/nettools-oci/, nettools.tar   the network-tools image as mcnet's nettools and
//	                                     as the conformance suite's alpine/socat and
//	                                     nicolaka/netshoot (same layers, their configs)
//	OutDir/pause-oci/, pause.tar         the pause image, as containerd's sandbox image
//	OutDir/postgresql-oci/, etcd-oci/    the example databases (Debian's PostgreSQL, the
//	                                     pinned etcd), and their .tar
func BuildImages(ctx context.Context, o ImagesOptions) ([]LabImage, error) {
	if err := o.complete(); err != nil {
		return nil, err
	}
	logf := func(format string, args ...any) { fmt.Fprintf(o.Log, "image: "+format+"\n", args...) }
	unlock, err := lockDir(o.OutDir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	build, err := os.MkdirTemp(o.OutDir, ".build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(build)

	cmds, err := commands(o.Root)
	if err != nil {
		return nil, err
	}
	cmds = slices.DeleteFunc(cmds, func(c string) bool { return c == pluginBinary })
	pkgs := map[string]string{}
	for _, c := range cmds {
		pkgs[c] = "./cmd/" + c
	}
	for _, c := range helperCommands {
		pkgs[c] = "./internal/imagecmd/" + c
	}
	start := time.Now()
	bins, err := buildBinaries(ctx, o.Root, o.Version, o.Commit, pkgs, o.Platform, build)
	if err != nil {
		return nil, err
	}
	logf("built %d binaries for %s in %s", len(bins), o.Platform, time.Since(start).Round(time.Second/10))

	var out []LabImage
	meta := ImageMeta{Version: o.Version, Revision: o.Commit, Created: o.Epoch}

	// mcnet's component image.
	mb, err := BuildBase(ctx, mcnetBase(bins["iptables-wrapper"]), o.Platform, o.CacheDir, o.Epoch, logf)
	if err != nil {
		return nil, err
	}
	license, err := os.ReadFile(filepath.Join(o.Root, "LICENSE"))
	if err != nil {
		return nil, fmt.Errorf("read LICENSE (the image ships it): %w", err)
	}
	files := []File{{Name: "LICENSE", Mode: 0o644, Data: license}}
	for _, c := range cmds {
		files = append(files, File{Name: c, Mode: 0o755, Data: bins[c]})
	}
	meta.BaseLayers = map[Platform][]v1.Layer{o.Platform: {mb.Layer}}
	idx, err := BuildImage(map[Platform][]File{o.Platform: files}, meta)
	if err != nil {
		return nil, err
	}
	mcnetRef := o.ImageRepository + ":" + o.ImageTag
	imgs, err := o.write("mcnet", []TaggedImage{{Index: idx, Refs: []string{mcnetRef}}}, []string{"mcnet"})
	if err != nil {
		return nil, err
	}
	out = append(out, imgs...)

	// The network-tools image and its aliases.
	nb, err := BuildBase(ctx, netToolsBase(), o.Platform, o.CacheDir, o.Epoch, logf)
	if err != nil {
		return nil, err
	}
	tools, err := fileLayer([]File{{Name: "usr/", Mode: 0o755}, {Name: "usr/local/", Mode: 0o755}, {Name: "usr/local/bin/", Mode: 0o755},
		{Name: "usr/local/bin/httpd", Mode: 0o755, Data: bins["httpd"]}}, o.Epoch)
	if err != nil {
		return nil, err
	}
	var aliases []TaggedImage
	var names []string
	for _, a := range netToolsAliases(sibling(o.ImageRepository, "nettools") + ":" + o.ImageTag) {
		idx, err := singleImage(o.Platform, o.Epoch, a.config, a.labels(meta), []v1.Layer{nb.Layer, tools},
			[]string{"internal/packaging: Debian packages " + strings.Join(NetToolsPackages, " "), "internal/packaging: httpd"})
		if err != nil {
			return nil, err
		}
		aliases = append(aliases, TaggedImage{Index: idx, Refs: a.refs})
		names = append(names, a.name)
	}
	imgs, err = o.write("nettools", aliases, names)
	if err != nil {
		return nil, err
	}
	out = append(out, imgs...)

	// The pause image: one static binary, no base.
	pl, err := fileLayer([]File{{Name: "pause", Mode: 0o755, Data: bins["pause"]}}, o.Epoch)
	if err != nil {
		return nil, err
	}
	pauseCfg := v1.Config{Entrypoint: []string{"/pause"}, User: "65535:65535"}
	pidx, err := singleImage(o.Platform, o.Epoch, pauseCfg, meta.labels(), []v1.Layer{pl}, []string{"internal/packaging: pause"})
	if err != nil {
		return nil, err
	}
	imgs, err = o.write("pause", []TaggedImage{{Index: pidx, Refs: append(slices.Clone(PauseRefs), sibling(o.ImageRepository, "pause")+":"+o.ImageTag)}}, []string{"pause"})
	if err != nil {
		return nil, err
	}
	out = append(out, imgs...)

	// The example databases' images (examples/databases/).
	imgs, err = o.buildDatabaseImages(ctx, meta, logf)
	if err != nil {
		return nil, err
	}
	out = append(out, imgs...)
	for _, img := range out {
		logf("%-12s %6.1f MB  %s", img.Name, float64(img.Size)/1e6, strings.Join(img.Refs, " "))
	}
	return out, nil
}

// sibling names the repository beside repo: ghcr.io/mcnet-io/mcnet → ghcr.io/mcnet-io/nettools.
func sibling(repo, name string) string {
	if i := strings.LastIndex(repo, "/"); i >= 0 {
		return repo[:i+1] + name
	}
	return name
}

// helperVersion is what the helper commands are stamped with: nothing that changes per
// commit, since the ldflags are recorded in the binary and the iptables wrapper is part of
// a base cached by its bytes.
func helperVersion() (version, commit string) { return "", "" }

// helperCommands are the programs of mcnet's images that are not components, built from
// internal/imagecmd/.
var helperCommands = []string{"iptables-wrapper", "pause", "httpd"}

func (o *ImagesOptions) complete() error {
	var errs []error
	if o.Root == "" {
		errs = append(errs, errors.New("the repository root is not set"))
	}
	if o.OutDir == "" {
		errs = append(errs, errors.New("the output directory is not set"))
	}
	if o.CacheDir == "" {
		errs = append(errs, errors.New("the cache directory is not set"))
	}
	if o.Platform == (Platform{}) {
		o.Platform = Platform{OS: "linux", Arch: runtime.GOARCH}
	}
	o.Version = NormalizeVersion(o.Version)
	if o.ImageRepository == "" {
		o.ImageRepository = DefaultImageRepository
	}
	if o.ImageTag == "" {
		o.ImageTag = o.Version
	}
	if _, err := name.NewTag(o.ImageRepository+":"+o.ImageTag, name.StrictValidation); err != nil {
		errs = append(errs, fmt.Errorf("image %s:%s: %w (set IMAGE_REPOSITORY and IMAGE_TAG)", o.ImageRepository, o.ImageTag, err))
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	return errors.Join(errs...)
}

// write writes one layout and its archive and describes each image in it.
func (o *ImagesOptions) write(base string, images []TaggedImage, names []string) ([]LabImage, error) {
	dir, archive := filepath.Join(o.OutDir, base+"-oci"), filepath.Join(o.OutDir, base+".tar")
	if err := WriteImages(images, dir, archive, o.Epoch); err != nil {
		return nil, err
	}
	var res []LabImage
	for i, img := range images {
		li := LabImage{Name: names[i], Layout: dir, Archive: archive, Refs: img.Refs}
		var err error
		if li.Digest, err = img.Index.Digest(); err != nil {
			return nil, err
		}
		if li.Size, li.Config, err = pullSize(img.Index); err != nil {
			return nil, err
		}
		res = append(res, li)
	}
	return res, nil
}

// pullSize adds up the index, each manifest, config and compressed layer, and returns the
// (first) image's config.
func pullSize(idx v1.ImageIndex) (int64, v1.Config, error) {
	raw, err := idx.RawManifest()
	if err != nil {
		return 0, v1.Config{}, err
	}
	size := int64(len(raw))
	m, err := idx.IndexManifest()
	if err != nil {
		return 0, v1.Config{}, err
	}
	var cfg v1.Config
	for i, d := range m.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			return 0, v1.Config{}, err
		}
		im, err := img.Manifest()
		if err != nil {
			return 0, v1.Config{}, err
		}
		size += d.Size + im.Config.Size
		for _, l := range im.Layers {
			size += l.Size
		}
		if i == 0 {
			cf, err := img.ConfigFile()
			if err != nil {
				return 0, v1.Config{}, err
			}
			cfg = cf.Config
		}
	}
	return size, cfg, nil
}

// buildBinaries builds each main package (name → package path) for p, two at a time, and
// returns their bytes by name.
func buildBinaries(ctx context.Context, root, version, commit string, pkgs map[string]string, p Platform, dir string) (map[string][]byte, error) {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(2)
	for n, pkg := range pkgs {
		g.Go(func() error {
			v, c := version, commit
			if slices.Contains(helperCommands, n) {
				v, c = helperVersion()
			}
			return goBuild(gctx, root, v, c, pkg, p, filepath.Join(dir, p.suffix(), n))
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	bins := map[string][]byte{}
	for n := range pkgs {
		data, err := os.ReadFile(filepath.Join(dir, p.suffix(), n))
		if err != nil {
			return nil, err
		}
		bins[n] = data
	}
	return bins, nil
}

// alias is one name the network-tools image goes by, with the config that name's users
// rely on.
type alias struct {
	name   string
	refs   []string
	config v1.Config
	title  string
}

func (a alias) labels(meta ImageMeta) map[string]string {
	l := meta.labels()
	l["org.opencontainers.image.title"] = a.title
	l["org.opencontainers.image.description"] = "mcnet's network-tools image (Debian packages: " + strings.Join(NetToolsPackages, " ") + "; httpd)"
	return l
}

// netToolsAliases are the network-tools image's names and configs: mcnet's own, and the
// two images of the MCS conformance suite with what their upstream images set
// (alpine/socat: ENTRYPOINT socat; nicolaka/netshoot: no entrypoint, CMD zsh — bash
// here, the image has no zsh — WORKDIR /root, HOSTNAME=netshoot).
func netToolsAliases(own string) []alias {
	path := "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	return []alias{
		{name: "nettools", refs: []string{own}, title: "mcnet-nettools",
			config: v1.Config{Env: []string{path}, Cmd: []string{"/bin/bash"}}},
		{name: "alpine-socat", refs: []string{SocatRef, "docker.io/alpine/socat:latest"}, title: "alpine/socat (mcnet lab stand-in)",
			config: v1.Config{Env: []string{path}, Entrypoint: []string{"socat"}}},
		{name: "netshoot", refs: []string{NetshootRef, "docker.io/nicolaka/netshoot:latest"}, title: "nicolaka/netshoot (mcnet lab stand-in)",
			config: v1.Config{Env: []string{path, "HOSTNAME=netshoot"}, Cmd: []string{"/bin/bash"}, WorkingDir: "/root"}},
	}
}

// fileLayer is one layer holding files.
func fileLayer(files []File, mtime time.Time) (v1.Layer, error) {
	var buf bytes.Buffer
	if err := writeTarGz(&buf, files, mtime); err != nil {
		return nil, err
	}
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// singleImage is an image index of one platform's image: layers on scratch, with cfg.
func singleImage(p Platform, created time.Time, cfg v1.Config, labels map[string]string, layers []v1.Layer, createdBy []string) (v1.ImageIndex, error) {
	t := v1.Time{Time: created.UTC()}
	cfg.Labels = labels
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		Architecture: p.Arch, OS: p.OS, Created: t, Config: cfg,
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, err
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for i, l := range layers {
		if img, err = mutate.Append(img, mutate.Addendum{Layer: l, MediaType: types.OCILayer, History: v1.History{Created: t, CreatedBy: createdBy[i]}}); err != nil {
			return nil, err
		}
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), mutate.IndexAddendum{
		Add:        img,
		Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: p.OS, Architecture: p.Arch}},
	})
	annotated, ok := mutate.Annotations(idx, labels).(v1.ImageIndex)
	if !ok {
		return nil, fmt.Errorf("annotate image index: unexpected type")
	}
	return annotated, nil
}
