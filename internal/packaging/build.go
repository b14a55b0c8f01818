package packaging

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// Platform is a GOOS/GOARCH pair; krew's selectors and OCI platforms use the same words.
type Platform struct {
	OS   string
	Arch string
}

func (p Platform) String() string { return p.OS + "/" + p.Arch }

// suffix is how archive names spell the platform: linux_amd64.
func (p Platform) suffix() string { return p.OS + "_" + p.Arch }

// PluginPlatforms are the platforms kubectl-mcnet is released for (krew.yaml lists the same).
var PluginPlatforms = []Platform{{"darwin", "amd64"}, {"darwin", "arm64"}, {"linux", "amd64"}, {"linux", "arm64"}}

// ImagePlatforms are the platforms of the in-cluster components' image.
var ImagePlatforms = []Platform{{"linux", "amd64"}, {"linux", "arm64"}}

// PluginName is the krew plugin name; the binary is kubectl-<PluginName>.
const PluginName = "mcnet"

const (
	pluginBinary     = "kubectl-" + PluginName
	completionShim   = "kubectl_complete-" + PluginName
	versionPkg       = "github.com/mcnet-io/mcnet/internal/version"
	completionScript = "#!/usr/bin/env sh\n" +
		"# kubectl (1.26+) runs kubectl_complete-<plugin> from PATH to complete `kubectl <plugin>`.\n" +
		"exec " + pluginBinary + " __complete \"$@\"\n"
)

// semverRe is the semantic version krew accepts in spec.version (with a leading v).
var semverRe = regexp.MustCompile(`^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)` +
	`(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$`)

// NormalizeVersion returns v when it is a semantic version krew accepts, and otherwise a
// pre-release of v0.0.0 that keeps v's text (a bare commit from `git describe --always`
// becomes v0.0.0-dev-a47c965), so untagged builds still make an installable manifest. The
// result is also the default image tag, so it never holds '+'.
func NormalizeVersion(v string) string {
	if semverRe.MatchString(v) && !strings.Contains(v, "+") {
		return v
	}
	clean := strings.Trim(regexp.MustCompile(`[^0-9A-Za-z-]+`).ReplaceAllString(v, "-"), "-")
	if clean == "" {
		return "v0.0.0-dev"
	}
	return "v0.0.0-dev-" + clean
}

// commands lists the main packages under root/cmd, by directory name.
func commands(root string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(root, "cmd"))
	if err != nil {
		return nil, fmt.Errorf("list commands: %w", err)
	}
	var cmds []string
	for _, e := range entries {
		if e.IsDir() {
			cmds = append(cmds, e.Name())
		}
	}
	return cmds, nil
}

// goBuild builds the main package pkg (./cmd/<name>) of the module at root for p the way
// `make build` does (static, -trimpath, version stamped). VCS stamping is off (the commit
// is stamped explicitly), so the bytes depend only on the sources, the flags and the
// toolchain, not on whether the work tree is dirty.
func goBuild(ctx context.Context, root, version, commit, pkg string, p Platform, out string) error {
	name := filepath.Base(pkg)
	ldflags := fmt.Sprintf("-s -w -X %s.Version=%s -X %s.Commit=%s", versionPkg, version, versionPkg, commit)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Arch)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s for %s: %w\n%s", name, p, err, stderr.Bytes())
	}
	return nil
}
