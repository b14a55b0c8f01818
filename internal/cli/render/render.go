// Package render implements `kubectl mcnet render`: fleet file in, GitOps tree out.
package render

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/cmdutil"
	"github.com/mcnet-io/mcnet/internal/fleet"
	"github.com/mcnet-io/mcnet/internal/version"
	"github.com/mcnet-io/mcnet/kustomize"
)

// Options are the flags and derived state of the render command.
type Options struct {
	FleetFile string
	OutDir    string
	Commit    bool
	Message   string
	ImageRepo string
	ImageTag  string
	RepoURL   string

	fleet   *mcnetv1.ClusterSet
	gitTop  string // the output's Git working tree, if any
	renderO kustomize.Options

	genericiooptions.IOStreams
}

// NewCommand returns the render command.
func NewCommand(streams genericiooptions.IOStreams) *cobra.Command {
	o := &Options{IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "render -f FLEET --out DIR",
		Short: "Render a fleet file into kustomize bases, overlays and Flux/Argo CD objects",
		Long: `Render reads a ClusterSet fleet file and writes the tree Argo CD or Flux applies:

  bases/crds       CRDs, applied first
  bases/mcnet      controller, gateway and route agent
  clusters/NAME    one overlay per cluster
  broker/          the broker namespace, one identity per cluster
  flux/NAME        Flux Kustomizations per cluster (CRDs first via dependsOn)
  argocd/          Argo CD AppProject and Applications (sync waves)

The same fleet renders a byte-identical tree. Rendering over an earlier render removes
what the fleet no longer has and leaves other files alone. Bad input changes nothing.`,
		Example: `  # Render the example fleet into a new Git repository and commit
  git init fleet-repo && kubectl mcnet render -f examples/fleet.yaml --out fleet-repo --commit`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Complete(cmd.Context()); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.FleetFile, "filename", "f", "", "Fleet file (a ClusterSet) to render")
	f.StringVar(&o.OutDir, "out", "", "Directory to render into (created if missing; may be a Git working tree)")
	f.BoolVar(&o.Commit, "commit", false, "Commit the rendered files in the output's Git repository (initialised if needed)")
	f.StringVar(&o.Message, "message", "", "Commit message (default: mcnet: render fleet NAME)")
	f.StringVar(&o.ImageRepo, "image-repository", "", "Image repository of the in-cluster components (overrides spec.image.repository)")
	f.StringVar(&o.ImageTag, "image-tag", "", "Image tag of the in-cluster components (overrides spec.image.tag; default: the plugin's version)")
	f.StringVar(&o.RepoURL, "repo-url", "", "Git URL Argo CD should sync from when the fleet has no spec.gitOps.repoURL (default: the output repository's origin)")
	_ = cmd.MarkFlagRequired("filename")
	_ = cmd.MarkFlagRequired("out")
	_ = cmd.MarkFlagFilename("filename", "yaml", "yml")
	_ = cmd.MarkFlagDirname("out")
	return cmd
}

// Complete loads the fleet and learns about the output directory.
func (o *Options) Complete(ctx context.Context) error {
	cs, err := fleet.Load(o.FleetFile)
	if err != nil {
		if errors.Is(err, fleet.ErrInvalid) || errors.Is(err, os.ErrNotExist) {
			return cmdutil.Usage(fmt.Errorf("%w\nnothing was written", err))
		}
		return cmdutil.Usage(err)
	}
	if o.ImageRepo != "" {
		cs.Spec.Image.Repository = o.ImageRepo
	}
	if o.ImageTag != "" {
		cs.Spec.Image.Tag = o.ImageTag
	}
	o.fleet = cs
	abs, err := filepath.Abs(o.OutDir)
	if err != nil {
		return cmdutil.Usage(fmt.Errorf("--out: %w", err))
	}
	o.OutDir = abs
	o.gitTop = gitTopLevel(ctx, abs)
	o.renderO = kustomize.Options{Version: version.Version, RepoURL: o.RepoURL}
	if o.gitTop != "" {
		if o.renderO.RepoURL == "" {
			o.renderO.RepoURL = git(ctx, o.gitTop, "remote", "get-url", "origin")
		}
		if cs.Spec.GitOps.Path == "" {
			if rel, err := filepath.Rel(o.gitTop, abs); err == nil && rel != "." {
				cs.Spec.GitOps.Path = filepath.ToSlash(rel)
			}
		}
	}
	return nil
}

// Validate checks the flags against each other and the file system.
func (o *Options) Validate() error {
	if fi, err := os.Stat(o.OutDir); err == nil && !fi.IsDir() {
		return cmdutil.Usage(fmt.Errorf("--out %s is a file; name a directory", o.OutDir))
	}
	if tag := o.fleet.Spec.Image.Tag; tag != "" && strings.ContainsAny(tag, " /:@") {
		return cmdutil.Usage(fmt.Errorf("image tag %q is not a valid tag (no spaces, '/', ':' or '@')", tag))
	}
	return nil
}

// Run renders and writes the tree, then commits if asked.
func (o *Options) Run(ctx context.Context) error {
	tree, err := kustomize.Render(o.fleet, o.renderO)
	if err != nil {
		return cmdutil.Failure(err)
	}
	if err := kustomize.Write(o.OutDir, tree); err != nil {
		return cmdutil.Failure(err)
	}
	fmt.Fprintf(o.Out, "rendered fleet %q (%d clusters, %d files) into %s\n", o.fleet.Name, len(o.fleet.Spec.Clusters), len(tree), o.OutDir)
	if kustomize.UsesPlaceholderRepo(o.fleet, o.renderO) {
		fmt.Fprintln(o.ErrOut, "warning: no Git URL for Argo CD (set spec.gitOps.repoURL, pass --repo-url, or add an origin remote); argocd/ points at a placeholder")
	}
	if !o.Commit {
		return nil
	}
	return o.commit(ctx)
}

func (o *Options) commit(ctx context.Context) error {
	top := o.gitTop
	if top == "" {
		if err := run(ctx, o.OutDir, "init", "-q", "-b", o.fleet.Spec.GitOps.Revision); err != nil {
			return cmdutil.Failure(fmt.Errorf("initialise Git repository in %s: %w", o.OutDir, err))
		}
		top = o.OutDir
	}
	if err := run(ctx, top, "add", "-A", "--", o.OutDir); err != nil {
		return cmdutil.Failure(fmt.Errorf("git add: %w", err))
	}
	if run(ctx, top, "diff", "--cached", "--quiet") == nil {
		fmt.Fprintln(o.Out, "nothing to commit: the tree already matches the fleet")
		return nil
	}
	msg := o.Message
	if msg == "" {
		msg = fmt.Sprintf("mcnet: render fleet %s (%d clusters)", o.fleet.Name, len(o.fleet.Spec.Clusters))
	}
	if err := run(ctx, top, "-c", "user.name=mcnet", "-c", "user.email=mcnet@localhost", "commit", "-q", "-m", msg); err != nil {
		return cmdutil.Failure(fmt.Errorf("git commit: %w", err))
	}
	fmt.Fprintf(o.Out, "committed: %s\n", git(ctx, top, "rev-parse", "--short", "HEAD"))
	return nil
}

// gitTopLevel returns the Git working tree dir belongs to, or "" when there is none or
// when that repository ignores dir (a render output inside another project is its own).
func gitTopLevel(ctx context.Context, dir string) string {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			top := git(ctx, d, "rev-parse", "--show-toplevel")
			if top != "" && top != dir && run(ctx, top, "check-ignore", "-q", dir) == nil {
				return ""
			}
			return top
		}
		if d == filepath.Dir(d) {
			return ""
		}
	}
}

// git runs a read-only git command and returns its trimmed output, or "" on any error.
func git(ctx context.Context, dir string, args ...string) string {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func run(ctx context.Context, dir string, args ...string) error {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
