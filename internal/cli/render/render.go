// Package render implements `kubectl mcnet render`: fleet file in, GitOps tree out.
//
// The command only orchestrates: internal/fleet loads, defaults and validates the
// fleet file, kustomize.Render turns it into an in-memory tree, kustomize.WriteTree
// puts that tree on disk atomically, and this package adds the Git side (defaults
// taken from the output's repository, and an optional commit of exactly the rendered
// paths). Render contacts no cluster.
package render

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/cli/clioptions"
	"github.com/mcnet-io/mcnet/internal/cmdutil"
	"github.com/mcnet-io/mcnet/internal/fleet"
	"github.com/mcnet-io/mcnet/internal/version"
	"github.com/mcnet-io/mcnet/kustomize"
)

// Options are the flags and derived state of the render command.
type Options struct {
	// FleetFile is the ClusterSet to render (-f); it is the only input.
	FleetFile string
	// OutDir is where the tree goes; Complete makes it absolute.
	OutDir string
	// Commit records the rendered paths, and only those, in a new commit.
	Commit bool
	// Force lets a render replace files it did not write itself.
	Force bool
	// Message is the commit message; empty means one naming the fleet.
	Message string
	// ImageRepo and ImageTag override the fleet's spec.image, so a CI pipeline
	// can render the image it just built without editing the fleet file.
	ImageRepo string
	ImageTag  string
	// RepoURL is the URL Argo CD syncs from when the fleet names none.
	RepoURL string

	// What Complete derives from the flags, for Validate and Run.
	// fleet is the loaded ClusterSet, defaulted and validated, with the
	// --image-* overrides and the Git path applied.
	fleet  *mcnetv1.ClusterSet
	gitTop string // the output's Git working tree, if any
	// renderO carries the plugin version, the Git URL Argo CD syncs from,
	// and the allocations an earlier render left in the tree.
	renderO kustomize.Options
	// flagErr is a kubeconfig flag given to a command that contacts no
	// cluster; Validate reports it, so the refusal follows the usual order.
	flagErr error

	genericiooptions.IOStreams
}

// NewCommand returns the render command. Unlike the other verbs it takes no
// kubeconfig flags: any given on the root are refused by name, since render
// contacts no cluster.
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
what the fleet no longer has and leaves other files alone: a file render did not write
is never overwritten without --force, and no rendered path is written through a symbolic
link. The update is atomic: a render killed part-way leaves the old tree, or a journal
the next render finishes first. Bad input changes nothing. A Git URL taken from the
origin remote loses any credentials in it before it is written into a manifest.`,
		Example: `  # Render the example fleet into a new Git repository and commit
  git init fleet-repo && kubectl mcnet render -f examples/fleet.yaml --out fleet-repo --commit`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.flagErr = clioptions.RejectKubeconfigFlags(cmd, "render reads a fleet file and writes files; it contacts no cluster")
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
	f.BoolVar(&o.Commit, "commit", false, "Commit the rendered files (and only them) in the output's Git repository (initialised if needed)")
	f.BoolVar(&o.Force, "force", false, "Overwrite files at rendered paths that an earlier render did not write")
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

// Complete loads the fleet and learns about the output directory: its absolute
// path, the Git working tree holding it, and what an earlier render left there. Its
// errors are usage errors (exit code 2), and none of them has written anything.
func (o *Options) Complete(ctx context.Context) error {
	// fleet.Load defaults and validates: an error here names the field at fault,
	// and nothing has been written yet, which the message says.
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
	// The output is absolute from here on: Git commands run in other
	// directories, and the journal records absolute paths.
	abs, err := filepath.Abs(o.OutDir)
	if err != nil {
		return cmdutil.Usage(fmt.Errorf("--out: %w", err))
	}
	o.OutDir = abs
	o.gitTop = gitTopLevel(ctx, abs)
	o.renderO = kustomize.Options{Version: version.Version, RepoURL: o.RepoURL}
	// What an earlier render allocated (global ranges, pinned addresses) is read
	// back from the tree, so adding a cluster never renumbers the others.
	if o.renderO.Kept, err = kustomize.ReadKept(abs, cs.Name); err != nil {
		return cmdutil.Usage(fmt.Errorf("%w\nnothing was written", err))
	}
	if o.gitTop != "" {
		// Inside a Git repository, its origin and the output's place in it are
		// the natural defaults for what Argo CD and Flux sync.
		if o.renderO.RepoURL == "" {
			o.renderO.RepoURL = withoutCredentials(git(ctx, o.gitTop, "remote", "get-url", "origin"))
		}
		if cs.Spec.GitOps.Path == "" {
			if rel, err := filepath.Rel(o.gitTop, abs); err == nil && rel != "." {
				cs.Spec.GitOps.Path = filepath.ToSlash(rel)
			}
		}
	}
	return nil
}

// Validate checks the flags against each other and the file system. It refuses a
// kubeconfig flag, an --out that is a file, a Git URL carrying credentials and an
// image tag holding a space, '/', ':' or '@'; each is a usage error (exit code 2).
func (o *Options) Validate() error {
	if o.flagErr != nil {
		return o.flagErr
	}
	if fi, err := os.Stat(o.OutDir); err == nil && !fi.IsDir() {
		return cmdutil.Usage(fmt.Errorf("--out %s is a file; name a directory", o.OutDir))
	}
	// A URL with a password would be written into every Argo CD Application,
	// and so pushed to Git: refuse it and name the field it came from.
	for _, u := range []struct{ field, url string }{{"--repo-url", o.RepoURL}, {"spec.gitOps.repoURL", o.fleet.Spec.GitOps.RepoURL}} {
		if u.url != "" && withoutCredentials(u.url) != u.url {
			return cmdutil.Usage(fmt.Errorf("%s %s carries credentials, which would be written into the manifests; give the URL without them and let Flux or Argo CD take credentials from a Secret\nnothing was written", u.field, withoutCredentials(u.url)))
		}
	}
	if tag := o.fleet.Spec.Image.Tag; tag != "" && strings.ContainsAny(tag, " /:@") {
		return cmdutil.Usage(fmt.Errorf("image tag %q is not a valid tag (no spaces, '/', ':' or '@')", tag))
	}
	return nil
}

// Run renders and writes the tree, then commits if asked. It prints one line naming
// the fleet and the file count, a warning on stderr when Argo CD has no real Git URL,
// and with --commit the new commit's short id (or that nothing changed).
func (o *Options) Run(ctx context.Context) error {
	// The whole tree is rendered in memory first; nothing touches the disk
	// until every file of it exists.
	tree, err := kustomize.Render(o.fleet, o.renderO)
	if err != nil {
		return cmdutil.Failure(err)
	}
	res, err := kustomize.WriteTree(o.OutDir, tree, kustomize.WriteOptions{Force: o.Force})
	if err != nil {
		// A file that is not ours, or a symbolic link on a rendered path, is
		// the user's to resolve (exit 2); anything else is an I/O failure.
		if errors.Is(err, kustomize.ErrNotOurs) || errors.Is(err, kustomize.ErrSymlink) {
			return cmdutil.Usage(err)
		}
		return cmdutil.Failure(err)
	}
	fmt.Fprintf(o.Out, "rendered fleet %q (%d clusters, %d files) into %s\n", o.fleet.Name, len(o.fleet.Spec.Clusters), len(tree), o.OutDir)
	if kustomize.UsesPlaceholderRepo(o.fleet, o.renderO) {
		fmt.Fprintln(o.ErrOut, "warning: no Git URL for Argo CD (set spec.gitOps.repoURL, pass --repo-url, or add an origin remote); argocd/ points at a placeholder")
	}
	if !o.Commit {
		return nil
	}
	// The index file and removed paths are part of the render too: without
	// them a commit would leave deleted clusters' overlays in Git.
	return o.commit(ctx, append(append(tree.Paths(), kustomize.IndexFile), res.Removed...))
}

// commit records exactly the rendered paths (written, unchanged or removed) in a new
// commit, through a temporary index: whatever else the user has staged or changed stays
// as it was, uncommitted.
func (o *Options) commit(ctx context.Context, rendered []string) error {
	top := o.gitTop
	// A fresh output directory becomes a repository whose branch is the one
	// the rendered Flux and Argo CD objects sync from.
	if top == "" {
		if err := run(ctx, o.OutDir, "init", "-q", "-b", o.fleet.Spec.GitOps.Revision); err != nil {
			return cmdutil.Failure(fmt.Errorf("initialise Git repository in %s: %w", o.OutDir, err))
		}
		top = o.OutDir
	}
	// The rendered paths are relative to the output; Git wants them relative to
	// the top of the working tree, with forward slashes.
	rel, err := filepath.Rel(top, o.OutDir)
	if err != nil {
		return cmdutil.Failure(err)
	}
	paths := make([]string, len(rendered))
	for i, p := range rendered {
		paths[i] = filepath.ToSlash(filepath.Join(rel, filepath.FromSlash(p)))
	}
	// Stage into a throwaway index seeded from HEAD, so the user's own index
	// (and whatever it holds) never takes part in the commit.
	idx, err := os.CreateTemp("", "mcnet-render-index-")
	if err != nil {
		return cmdutil.Failure(err)
	}
	idx.Close()
	defer os.Remove(idx.Name())
	env := []string{"GIT_INDEX_FILE=" + idx.Name()}
	head := git(ctx, top, "rev-parse", "-q", "--verify", "HEAD")
	readTree := []string{"read-tree", "--empty"}
	if head != "" {
		readTree = []string{"read-tree", head}
	}
	if err := runEnv(ctx, top, env, nil, readTree...); err != nil {
		return cmdutil.Failure(fmt.Errorf("git read-tree: %w", err))
	}
	// --add --remove: a rendered path that exists is staged, one that is gone is dropped.
	if err := runEnv(ctx, top, env, strings.NewReader(strings.Join(paths, "\x00")+"\x00"), "update-index", "--add", "--remove", "-z", "--stdin"); err != nil {
		return cmdutil.Failure(fmt.Errorf("git update-index: %w", err))
	}
	tree, err := outputEnv(ctx, top, env, "write-tree")
	if err != nil {
		return cmdutil.Failure(fmt.Errorf("git write-tree: %w", err))
	}
	// An unchanged fleet makes an identical tree: no empty commit.
	if head != "" && git(ctx, top, "rev-parse", head+"^{tree}") == tree {
		fmt.Fprintln(o.Out, "nothing to commit: the tree already matches the fleet")
		return nil
	}
	// The default message names the fleet and its size, so `git log` of the
	// fleet repository reads as a history of the fleet.
	msg := o.Message
	if msg == "" {
		msg = fmt.Sprintf("mcnet: render fleet %s (%d clusters)", o.fleet.Name, len(o.fleet.Spec.Clusters))
	}
	// commit-tree plus a compare-and-swap update-ref: a concurrent commit by
	// someone else makes this fail rather than be overwritten. The identity is
	// fixed so the command works in repositories with no user configured.
	args := []string{"-c", "user.name=mcnet", "-c", "user.email=mcnet@localhost", "commit-tree", tree, "-m", msg}
	if head != "" {
		args = append(args, "-p", head)
	}
	commit, err := outputEnv(ctx, top, nil, args...)
	if err != nil {
		return cmdutil.Failure(fmt.Errorf("git commit-tree: %w", err))
	}
	oldRef := head
	if oldRef == "" {
		oldRef = strings.Repeat("0", len(commit)) // HEAD must still be unborn
	}
	if err := run(ctx, top, "update-ref", "-m", "mcnet render", "HEAD", commit, oldRef); err != nil {
		return cmdutil.Failure(fmt.Errorf("git update-ref: %w", err))
	}
	// The real index learns the rendered paths only, so they show as committed.
	if err := runEnv(ctx, top, nil, strings.NewReader(strings.Join(paths, "\x00")+"\x00"), "update-index", "--add", "--remove", "-z", "--stdin"); err != nil {
		return cmdutil.Failure(fmt.Errorf("git update-index: %w", err))
	}
	fmt.Fprintf(o.Out, "committed: %s\n", git(ctx, top, "rev-parse", "--short", "HEAD"))
	return nil
}

// withoutCredentials drops the user name and password from a URL with a scheme, except
// an ssh user name (git@host), which names an account rather than proving it. SCP-like
// addresses (git@host:path) carry no password and are returned unchanged.
func withoutCredentials(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil || u.Scheme == "" {
		return raw
	}
	_, hasPassword := u.User.Password()
	if (u.Scheme == "ssh" || u.Scheme == "git+ssh") && !hasPassword {
		return raw
	}
	if u.Scheme == "ssh" || u.Scheme == "git+ssh" {
		u.User = url.User(u.User.Username())
	} else {
		u.User = nil
	}
	return u.String()
}

// gitTopLevel returns the Git working tree dir belongs to, or "" when there is none or
// when that repository ignores dir (a render output inside another project is its own).
func gitTopLevel(ctx context.Context, dir string) string {
	// --out may not exist yet (render creates it): ask Git from the nearest
	// existing ancestor instead.
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

// run runs a git command that must succeed; its error carries git's stderr.
func run(ctx context.Context, dir string, args ...string) error {
	return runEnv(ctx, dir, nil, nil, args...)
}

// runEnv is run with extra environment (GIT_INDEX_FILE) and standard input.
func runEnv(ctx context.Context, dir string, env []string, stdin io.Reader, args ...string) error {
	_, err := gitCmd(ctx, dir, env, stdin, args...)
	return err
}

// outputEnv runs a git command and returns its trimmed standard output.
func outputEnv(ctx context.Context, dir string, env []string, args ...string) (string, error) {
	return gitCmd(ctx, dir, env, nil, args...)
}

// gitCmd is the one place git is executed: the environment is the user's plus
// env, and a failure's error includes what git wrote to stderr.
func gitCmd(ctx context.Context, dir string, env []string, stdin io.Reader, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}
