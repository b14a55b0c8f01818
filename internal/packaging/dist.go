// Package packaging builds mcnet's release artifacts: the kubectl-mcnet archives krew
// installs, the krew manifest that describes them, and the OCI image of the in-cluster
// components. Every artifact is reproducible: the same sources, version, commit and epoch
// give the same bytes, so a release can be rebuilt and checked.
package packaging

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"golang.org/x/sync/errgroup"
)

// Options says what to build and where.
type Options struct {
	// Root is the repository root: cmd/, krew.yaml and LICENSE are read from it.
	Root string
	// OutDir receives the artifacts (dist/).
	OutDir string
	// Version and Commit are stamped into the binaries; Version is normalized with
	// NormalizeVersion and becomes the manifest's spec.version and the default image tag.
	Version string
	Commit  string
	// Epoch is the mtime of every archive entry and the image's creation time.
	Epoch time.Time
	// ImageRepository and ImageTag name the image (tag defaults to the version).
	ImageRepository string
	ImageTag        string
	// SkipImage leaves the image out.
	SkipImage bool
	// BaseLayout, when set, is an OCI image layout whose index holds the base image per
	// platform, used instead of mcnet's Debian base (it must then provide iptables in
	// both modes and the nonroot user 65532 itself).
	BaseLayout string
	// CacheDir keeps the Debian packages, foreign package lists and built bases of the
	// Debian base (default Root/bin/debian).
	CacheDir string
	// Log receives one line per step (nil: discarded).
	Log io.Writer
}

// DefaultImageRepository is where releases push the in-cluster image.
const DefaultImageRepository = "ghcr.io/mcnet-io/mcnet"

// Artifact is one file written to OutDir.
type Artifact struct {
	Path   string
	Sha256 string
}

// Result lists what Dist wrote.
type Result struct {
	Version  string
	Archives map[Platform]Artifact
	Manifest Artifact
	// Image is empty when no in-cluster command exists under cmd/ (or SkipImage).
	Image       Artifact
	ImageLayout string
	ImageRef    string
	// ImageBinaries are the in-cluster commands in the image, at /<name>.
	ImageBinaries []string
}

// Dist builds the release artifacts into o.OutDir:
//
//	kubectl-mcnet_<os>_<arch>.tar.gz  kubectl-mcnet, kubectl_complete-mcnet, LICENSE
//	mcnet.yaml                        krew.yaml rendered with the archives' sha256
//	mcnet-image-oci/, mcnet-image.tar the in-cluster binaries' image (OCI layout, and its tar)
//	SHA256SUMS                        sums of the above files
func Dist(ctx context.Context, o Options) (*Result, error) {
	if err := o.complete(); err != nil {
		return nil, err
	}
	license, err := os.ReadFile(filepath.Join(o.Root, "LICENSE"))
	if err != nil {
		return nil, fmt.Errorf("read LICENSE (every archive ships it): %w", err)
	}
	tmpl, err := os.ReadFile(filepath.Join(o.Root, "krew.yaml"))
	if err != nil {
		return nil, fmt.Errorf("read krew manifest template: %w", err)
	}
	cmds, err := commands(o.Root)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(cmds, pluginBinary) {
		return nil, fmt.Errorf("no cmd/%s in %s", pluginBinary, o.Root)
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, err
	}
	build, err := os.MkdirTemp(o.OutDir, ".build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(build)

	imageCmds := slices.DeleteFunc(slices.Clone(cmds), func(c string) bool { return c == pluginBinary })
	if o.SkipImage {
		imageCmds = nil
	}
	if err := o.buildAll(ctx, build, imageCmds); err != nil {
		return nil, err
	}

	res := &Result{Version: o.Version, Archives: map[Platform]Artifact{}}
	sums := map[string]string{}
	for _, p := range PluginPlatforms {
		data, err := os.ReadFile(filepath.Join(build, p.suffix(), pluginBinary))
		if err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		err = writeTarGz(&buf, []File{
			{Name: pluginBinary, Mode: 0o755, Data: data},
			{Name: completionShim, Mode: 0o755, Data: []byte(completionScript)},
			{Name: "LICENSE", Mode: 0o644, Data: license},
		}, o.Epoch)
		if err != nil {
			return nil, fmt.Errorf("archive for %s: %w", p, err)
		}
		a, err := writeArtifact(o.OutDir, ArchiveName(p), buf.Bytes())
		if err != nil {
			return nil, err
		}
		res.Archives[p] = a
		sums[filepath.Base(a.Path)] = a.Sha256
	}

	o.logf("writing the krew manifest %s.yaml", PluginName)
	manifest, err := RenderManifest(tmpl, o.Version, sums)
	if err != nil {
		return nil, err
	}
	if _, err := ParsePlugin(manifest); err != nil {
		return nil, err
	}
	if res.Manifest, err = writeArtifact(o.OutDir, PluginName+".yaml", manifest); err != nil {
		return nil, err
	}

	if err := o.image(ctx, res, imageCmds, build, license); err != nil {
		return nil, err
	}
	return res, writeSums(o.OutDir, res)
}

// ArchiveName is the release archive of kubectl-mcnet for p.
func ArchiveName(p Platform) string { return pluginBinary + "_" + p.suffix() + ".tar.gz" }

func (o *Options) complete() error {
	var errs []error
	if o.Root == "" {
		errs = append(errs, errors.New("the repository root is not set"))
	}
	if o.OutDir == "" {
		errs = append(errs, errors.New("the output directory is not set"))
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
	if o.CacheDir == "" && o.Root != "" {
		o.CacheDir = filepath.Join(o.Root, "bin", "debian")
	}
	return errors.Join(errs...)
}

func (o *Options) logf(format string, args ...any) {
	fmt.Fprintf(o.Log, "dist: "+format+"\n", args...)
}

// buildAll builds kubectl-mcnet for PluginPlatforms and the in-cluster commands for
// ImagePlatforms into build/<os>_<arch>/<name>, two builds at a time: compiling is
// parallel within a build already, linking is not.
func (o *Options) buildAll(ctx context.Context, build string, imageCmds []string) error {
	type job struct {
		name string
		p    Platform
	}
	var jobs []job
	for _, p := range PluginPlatforms {
		jobs = append(jobs, job{pluginBinary, p})
	}
	for _, p := range ImagePlatforms {
		for _, c := range imageCmds {
			jobs = append(jobs, job{c, p})
		}
		if len(imageCmds) > 0 && o.BaseLayout == "" {
			jobs = append(jobs, job{"iptables-wrapper", p})
		}
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(2)
	for _, j := range jobs {
		g.Go(func() error {
			o.logf("building %s for %s", j.name, j.p)
			pkg, version, commit := "./cmd/"+j.name, o.Version, o.Commit
			if slices.Contains(helperCommands, j.name) {
				pkg = "./internal/imagecmd/" + j.name
				version, commit = helperVersion()
			}
			return goBuild(ctx, o.Root, version, commit, pkg, j.p, filepath.Join(build, j.p.suffix(), j.name))
		})
	}
	return g.Wait()
}

// image writes the image of the in-cluster commands (every cmd/ but the plugin), built
// for ImagePlatforms by buildAll.
func (o *Options) image(ctx context.Context, res *Result, cmds []string, build string, license []byte) error {
	if len(cmds) == 0 {
		o.logf("no in-cluster commands under cmd/ (or skipped): no image")
		return nil
	}
	files := map[Platform][]File{}
	for _, p := range ImagePlatforms {
		files[p] = []File{
			{Name: "LICENSE", Mode: 0o644, Data: license},
			{Name: "tmp/", Mode: 0o777 | os.ModeSticky},
		}
		for _, c := range cmds {
			data, err := os.ReadFile(filepath.Join(build, p.suffix(), c))
			if err != nil {
				return err
			}
			files[p] = append(files[p], File{Name: c, Mode: 0o755, Data: data})
		}
	}
	ref, err := name.NewTag(o.ImageRepository+":"+o.ImageTag, name.StrictValidation)
	if err != nil {
		return err
	}
	o.logf("writing image %s", ref)
	meta := ImageMeta{Version: o.Version, Revision: o.Commit, Created: o.Epoch}
	if o.BaseLayout != "" {
		if meta.Base, err = layout.ImageIndexFromPath(o.BaseLayout); err != nil {
			return fmt.Errorf("base image layout %s: %w", o.BaseLayout, err)
		}
	} else {
		// mcnet's Debian base, the same one `make image` builds, for each platform.
		meta.BaseLayers = map[Platform][]v1.Layer{}
		for _, p := range ImagePlatforms {
			wrapper, err := os.ReadFile(filepath.Join(build, p.suffix(), "iptables-wrapper"))
			if err != nil {
				return err
			}
			b, err := BuildBase(ctx, mcnetBase(wrapper), p, o.CacheDir, o.Epoch, o.logf)
			if err != nil {
				return err
			}
			meta.BaseLayers[p] = []v1.Layer{b.Layer}
		}
	}
	idx, err := BuildImage(files, meta)
	if err != nil {
		return err
	}
	res.ImageLayout = filepath.Join(o.OutDir, "mcnet-image-oci")
	tarPath := filepath.Join(o.OutDir, "mcnet-image.tar")
	if err := WriteImage(idx, ref, res.ImageLayout, tarPath, o.Epoch); err != nil {
		return err
	}
	res.Image, err = fileArtifact(tarPath)
	res.ImageRef, res.ImageBinaries = ref.String(), cmds
	return err
}

// writeArtifact writes data to dir/name through a temporary file, so a failed run leaves
// no half-written artifact.
func writeArtifact(dir, name string, data []byte) (Artifact, error) {
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path+".tmp", data, 0o644); err != nil {
		return Artifact{}, err
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return Artifact{}, err
	}
	sum := sha256.Sum256(data)
	return Artifact{Path: path, Sha256: hex.EncodeToString(sum[:])}, nil
}

func fileArtifact(path string) (Artifact, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Artifact{}, err
	}
	sum := sha256.Sum256(data)
	return Artifact{Path: path, Sha256: hex.EncodeToString(sum[:])}, nil
}

// writeSums writes SHA256SUMS in the format `sha256sum -c` reads.
func writeSums(dir string, res *Result) error {
	all := []Artifact{res.Manifest}
	for _, a := range res.Archives {
		all = append(all, a)
	}
	if res.Image.Path != "" {
		all = append(all, res.Image)
	}
	var lines []string
	for _, a := range all {
		lines = append(lines, a.Sha256+"  "+filepath.Base(a.Path)+"\n")
	}
	slices.SortFunc(lines, func(a, b string) int { return strings.Compare(a[66:], b[66:]) })
	_, err := writeArtifact(dir, "SHA256SUMS", []byte(strings.Join(lines, "")))
	return err
}
