package packaging

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"
)

// DebianBase is a root filesystem made of Debian packages: the base layer of an image.
// It is what `apt-get install --no-install-recommends` would leave on a merged-/usr
// system, minus documentation, with the effects of the maintainer scripts that matter
// in a container done by the builder (see rootfs.go).
type DebianBase struct {
	// Name names the base in the cache and in messages ("mcnet", "nettools").
	Name string
	// Packages are installed with their dependency closure (Depends and Pre-Depends).
	Packages []string
	// Alternatives override update-alternatives links: absolute link path → absolute
	// target. Links the packages' postinst scripts register are made anyway.
	Alternatives map[string]string
	// Files are written over what the packages ship (passwd, group, ...).
	Files []File
}

// scriptOnlyPackages are what apt would pull in only to run maintainer scripts or to
// manage a full system (users, services, the package database, the /usr merge). They are
// declared installed to apt when it resolves a base, so that it never picks them; what
// their scripts would have done is done by the builder (passwd and group files, the
// merged /usr symlinks, update-alternatives links).
var scriptOnlyPackages = []string{
	"adduser", "base-passwd", "debconf", "debianutils", "dpkg", "init-system-helpers",
	"libpam-runtime", "lsb-base", "passwd", "perl-base", "sysvinit-utils", "usr-is-merged",
	"usrmerge",
}

// debPackage is one resolved package: what apt would install.
type debPackage struct {
	Name, Version, Arch string
}

func (p debPackage) String() string { return p.Name + "=" + p.Version }

// fileName is the name apt-get download gives the package's file (an epoch's colon is
// escaped as %3a).
func (p debPackage) fileName() string {
	return p.Name + "_" + strings.ReplaceAll(p.Version, ":", "%3a") + "_" + p.Arch + ".deb"
}

// apt runs apt-get and apt-cache for one architecture. For the host's architecture it
// uses the host's package lists (`apt-get update` is the host's business); for another
// it keeps its own lists under dir, fetched once from the host's configured sources.
// In both it resolves against an empty package database of its own, never the host's.
type apt struct {
	arch string
	dir  string // private state: lists of a foreign architecture, the fake dpkg status
	log  func(format string, args ...any)
}

// aptTools are the host commands a Debian base needs, with the Debian package that ships
// each, for the one clear message a missing tool gets.
var aptTools = map[string]string{"apt-get": "apt", "apt-cache": "apt", "dpkg-deb": "dpkg"}

func newApt(ctx context.Context, arch, dir string, logf func(string, ...any)) (*apt, error) {
	for _, tool := range []string{"apt-get", "apt-cache", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("building a Debian base needs %s (Debian package %s) on this host: %w", tool, aptTools[tool], err)
		}
	}
	// apt reads relative Dir:: paths against its own directories: make them absolute.
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	a := &apt{arch: arch, dir: filepath.Join(dir, "apt", arch), log: logf}
	if err := os.MkdirAll(filepath.Join(a.dir, "lists", "partial"), 0o755); err != nil {
		return nil, err
	}
	if !a.native() {
		lists, _ := filepath.Glob(filepath.Join(a.dir, "lists", "*_Packages*"))
		if len(lists) == 0 {
			a.log("fetching the package lists for %s (once; into %s)", arch, a.dir)
			if _, err := a.run(ctx, "apt-get", "update"); err != nil {
				return nil, fmt.Errorf("package lists for %s: %w", arch, err)
			}
		}
	}
	return a, nil
}

// native reports whether the base is for the host's own Debian architecture.
func (a *apt) native() bool { return a.arch == debianArch(runtime.GOARCH) }

// debianArch is the Debian architecture of a Go GOARCH.
func debianArch(goarch string) string {
	switch goarch {
	case "arm":
		return "armhf"
	case "386":
		return "i386"
	case "ppc64le":
		return "ppc64el"
	}
	return goarch
}

func (a *apt) options() []string {
	status := filepath.Join(a.dir, "status")
	opts := []string{
		"-o", "Dir::State::status=" + status,
		"-o", "Dir::Cache=" + filepath.Join(a.dir, "cache"),
		"-o", "Debug::NoLocking=1",
		"-o", "APT::Install-Recommends=false",
		"-o", "APT::Install-Suggests=false",
		"-o", "APT::Sandbox::User=root",
	}
	if !a.native() {
		opts = append(opts,
			"-o", "APT::Architecture="+a.arch,
			"-o", "APT::Architectures::="+a.arch,
			"-o", "Dir::State::Lists="+filepath.Join(a.dir, "lists"))
	}
	return opts
}

// run runs an apt tool with the private options; the error carries apt's own "E:" lines.
func (a *apt) run(ctx context.Context, tool string, args ...string) ([]byte, error) {
	status := filepath.Join(a.dir, "status")
	if _, err := os.Stat(status); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(status, nil, 0o644); err != nil {
			return nil, err
		}
	}
	cmd := exec.CommandContext(ctx, tool, append(a.options(), args...)...)
	cmd.Env = append(os.Environ(), "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var msgs []string
		for _, l := range strings.Split(stderr.String(), "\n") {
			if strings.HasPrefix(l, "E: ") {
				msgs = append(msgs, strings.TrimPrefix(l, "E: "))
			}
		}
		if len(msgs) == 0 {
			msgs = []string{strings.TrimSpace(stderr.String())}
		}
		return nil, fmt.Errorf("%s %s: %w: %s", tool, strings.Join(args, " "), err, strings.Join(msgs, "; "))
	}
	return stdout.Bytes(), nil
}

var unknownPackage = regexp.MustCompile(`Unable to locate package (\S+)|Package '?([^' ]+)'? has no installation candidate`)

// resolve returns the packages apt would install for pkgs on an empty system, sorted by
// name, leaving out scriptOnlyPackages (declared installed).
func (a *apt) resolve(ctx context.Context, pkgs []string) ([]debPackage, error) {
	if err := a.fakeStatus(ctx); err != nil {
		return nil, err
	}
	out, err := a.run(ctx, "apt-get", append([]string{"-s", "-q", "install"}, pkgs...)...)
	if err != nil {
		if m := unknownPackage.FindStringSubmatch(err.Error()); m != nil {
			return nil, fmt.Errorf("Debian package %s is not known to apt for %s (misspelt, or run apt-get update): %w", m[1]+m[2], a.arch, err)
		}
		return nil, err
	}
	// Inst libc6 (2.36-9+deb12u14 Debian-Security:12/stable-security [amd64])
	inst := regexp.MustCompile(`^Inst (\S+) (?:\[\S+\] )?\((\S+) .*\[(\S+)\]\)`)
	var res []debPackage
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if m := inst.FindStringSubmatch(sc.Text()); m != nil {
			res = append(res, debPackage{Name: m[1], Version: m[2], Arch: m[3]})
		}
	}
	if len(res) == 0 {
		return nil, fmt.Errorf("apt-get would install nothing for %s:\n%s", strings.Join(pkgs, " "), out)
	}
	slices.SortFunc(res, func(x, y debPackage) int { return strings.Compare(x.Name, y.Name) })
	return res, nil
}

// fakeStatus writes the private dpkg status that declares scriptOnlyPackages installed,
// at their candidate versions, without dependencies of their own.
func (a *apt) fakeStatus(ctx context.Context) error {
	if err := os.WriteFile(filepath.Join(a.dir, "status"), nil, 0o644); err != nil {
		return err
	}
	out, err := a.run(ctx, "apt-cache", append([]string{"show", "--no-all-versions"}, scriptOnlyPackages...)...)
	if err != nil {
		return fmt.Errorf("read the candidates of the packages a base leaves out: %w", err)
	}
	keep := map[string]bool{"Package": true, "Version": true, "Architecture": true, "Multi-Arch": true, "Provides": true, "Essential": true}
	var status bytes.Buffer
	for _, stanza := range strings.Split(string(out), "\n\n") {
		if strings.TrimSpace(stanza) == "" {
			continue
		}
		for _, line := range strings.Split(stanza, "\n") {
			if k, _, ok := strings.Cut(line, ":"); ok && keep[k] && !strings.HasPrefix(line, " ") {
				status.WriteString(line + "\n")
			}
		}
		status.WriteString("Status: install ok installed\n\n")
	}
	return os.WriteFile(filepath.Join(a.dir, "status"), status.Bytes(), 0o644)
}

// download makes sure dir holds each package's .deb, fetching the missing ones with
// apt-get download (which checks them against the signed package lists), and returns
// their paths in pkgs' order.
func (a *apt) download(ctx context.Context, pkgs []debPackage, dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var missing []string
	paths := make([]string, len(pkgs))
	for i, p := range pkgs {
		paths[i] = filepath.Join(dir, p.fileName())
		if _, err := os.Stat(paths[i]); err != nil {
			missing = append(missing, p.String())
		}
	}
	if len(missing) > 0 {
		a.log("downloading %d Debian packages for %s into %s", len(missing), a.arch, dir)
		cmd := exec.CommandContext(ctx, "apt-get", append(append(a.options(), "-q", "download"), missing...)...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "LC_ALL=C")
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("apt-get download: %w\n%s", err, out)
		}
	}
	for i, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("apt-get download left no %s for %s: %w", filepath.Base(p), pkgs[i], err)
		}
	}
	return paths, nil
}

// baseKey names a base's cache entry: the packages with their versions and architecture,
// the builder's format and the extra content, so any change to them builds anew.
func baseKey(b DebianBase, pkgs []debPackage, epoch time.Time) string {
	h := sha256.New()
	fmt.Fprintf(h, "format %d epoch %d\n", rootfsFormat, epoch.Unix())
	for _, p := range pkgs {
		fmt.Fprintf(h, "pkg %s %s %s\n", p.Name, p.Version, p.Arch)
	}
	links := make([]string, 0, len(b.Alternatives))
	for l, t := range b.Alternatives {
		links = append(links, l+" "+t)
	}
	slices.Sort(links)
	for _, l := range links {
		fmt.Fprintf(h, "alt %s\n", l)
	}
	for _, f := range b.Files {
		sum := sha256.Sum256(f.Data)
		fmt.Fprintf(h, "file %s %o %d:%d %s %x\n", f.Name, f.Mode, f.UID, f.GID, f.Link, sum)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// debContents streams a .deb's data and control archives as tar (dpkg-deb decompresses
// them, whatever their compression).
func debContents(ctx context.Context, path, what string) (io.ReadCloser, func() error, error) {
	cmd := exec.CommandContext(ctx, "dpkg-deb", what, path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("dpkg-deb %s %s: %w", what, filepath.Base(path), err)
	}
	wait := func() error {
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("dpkg-deb %s %s: %w: %s", what, filepath.Base(path), err, strings.TrimSpace(stderr.String()))
		}
		return nil
	}
	return out, wait, nil
}
