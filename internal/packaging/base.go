package packaging

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/mcnet-io/mcnet/internal/iptwrapper"
)

// MCNetPackages are the Debian packages of mcnet's image base. The components exec no
// program today (the dataplane programs its nftables table over netlink;
// TestImageHoldsWhatComponentsExec fails when that changes unaccounted), but the image
// carries iptables in both backends, legacy and nft, with -save and -restore, behind the
// wrapper that picks the node's: for whoever debugs a node from the gateway's container,
// and for any code that execs iptables again (github.com/coreos/go-iptables did).
var MCNetPackages = []string{"base-files", "netbase", "iptables"}

// NetToolsPackages are the Debian packages of the network-tools image: what test
// workloads and the MCS conformance suite's pods run (sh, grep, awk, tr, socat, nc,
// nslookup and dig, curl, iperf3, ip, ping).
var NetToolsPackages = []string{
	"base-files", "netbase", "bash", "dash", "coreutils", "grep", "sed", "mawk",
	"socat", "netcat-openbsd", "bind9-dnsutils", "curl", "iperf3", "iproute2", "iputils-ping",
}

// Users of the images: root, nobody and the unprivileged nonroot (65532, as distroless
// images have it), whose home is /home/nonroot.
const (
	nonrootUID = 65532
	nobodyUID  = 65534
)

// accountFiles are /etc/passwd, /etc/group and the name service configuration, which
// Debian's base-passwd and libc-bin maintainer scripts would have written.
func accountFiles(shell string) []File {
	passwd := fmt.Sprintf("root:x:0:0:root:/root:%s\n"+
		"nobody:x:%d:%d:nobody:/nonexistent:/usr/sbin/nologin\n"+
		"nonroot:x:%d:%d:nonroot:/home/nonroot:/usr/sbin/nologin\n", shell, nobodyUID, nobodyUID, nonrootUID, nonrootUID)
	group := fmt.Sprintf("root:x:0:\nnogroup:x:%d:\nnonroot:x:%d:\n", nobodyUID, nonrootUID)
	nsswitch := "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n"
	return []File{
		{Name: "etc/passwd", Mode: 0o644, Data: []byte(passwd)},
		{Name: "etc/group", Mode: 0o644, Data: []byte(group)},
		{Name: "etc/nsswitch.conf", Mode: 0o644, Data: []byte(nsswitch)},
		{Name: "home/nonroot/", Mode: 0o755, UID: nonrootUID, GID: nonrootUID},
	}
}

// mcnetBase is the base of mcnet's image, with the iptables wrapper binary for its
// platform installed as every iptables command.
func mcnetBase(wrapper []byte) DebianBase {
	alts := map[string]string{}
	for _, c := range iptwrapper.Commands {
		alts["/usr/sbin/"+c] = "/usr/sbin/iptables-wrapper"
	}
	return DebianBase{
		Name:         "mcnet",
		Packages:     MCNetPackages,
		Alternatives: alts,
		Files: append(accountFiles("/usr/sbin/nologin"),
			File{Name: "usr/sbin/iptables-wrapper", Mode: 0o755, Data: wrapper}),
	}
}

// netToolsBase is the base of the network-tools image.
func netToolsBase() DebianBase {
	return DebianBase{Name: "nettools", Packages: NetToolsPackages, Files: accountFiles("/bin/bash")}
}

// Base is a built base layer.
type Base struct {
	Layer v1.Layer
	// Packages are the Debian packages in it, name=version.
	Packages []string
	// Path is the cached layer (a .tar.gz under the cache directory).
	Path string
	// Cached reports whether it came from the cache.
	Cached bool
}

// BuildBase returns b's layer for p: resolved by apt against the host's package lists
// (or, for a foreign architecture, lists of its own under cacheDir), the packages
// downloaded into cacheDir/debs/<arch>/ once, the layer written to
// cacheDir/bases/<name>-<arch>-<key>.tar.gz once. The key covers the package versions,
// the extra files and epoch (every entry's mtime), so a second build with the same
// package lists only asks apt to resolve.
func BuildBase(ctx context.Context, b DebianBase, p Platform, cacheDir string, epoch time.Time, logf func(string, ...any)) (*Base, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if p.OS != "linux" {
		return nil, fmt.Errorf("a Debian base is for linux, not %s", p)
	}
	arch := debianArch(p.Arch)
	unlock, err := lockDir(cacheDir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	a, err := newApt(ctx, arch, cacheDir, logf)
	if err != nil {
		return nil, err
	}
	pkgs, err := a.resolve(ctx, b.Packages)
	if err != nil {
		return nil, fmt.Errorf("base %s for %s: %w", b.Name, p, err)
	}
	res := &Base{}
	for _, pkg := range pkgs {
		res.Packages = append(res.Packages, pkg.String())
	}
	key := baseKey(b, pkgs, epoch)
	res.Path = filepath.Join(cacheDir, "bases", fmt.Sprintf("%s-%s-%s.tar.gz", b.Name, arch, key))
	if _, err := os.Stat(res.Path); err == nil {
		res.Cached = true
		res.Layer, err = tarball.LayerFromFile(res.Path, tarball.WithMediaType(types.OCILayer))
		return res, err
	}

	start := time.Now()
	debs, err := a.download(ctx, pkgs, filepath.Join(cacheDir, "debs", arch))
	if err != nil {
		return nil, fmt.Errorf("base %s for %s: %w", b.Name, p, err)
	}
	r := newRootfs()
	for i, pkg := range pkgs {
		if err := r.addDeb(ctx, debs[i], pkg); err != nil {
			return nil, fmt.Errorf("base %s for %s: %w", b.Name, p, err)
		}
	}
	if err := r.finish(b.Alternatives, b.Files); err != nil {
		return nil, fmt.Errorf("base %s for %s: %w", b.Name, p, err)
	}
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if err := r.write(zw, epoch); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(res.Path), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(res.Path+".tmp", buf.Bytes(), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(strings.TrimSuffix(res.Path, ".tar.gz")+".packages", []byte(strings.Join(res.Packages, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	if err := os.Rename(res.Path+".tmp", res.Path); err != nil {
		return nil, err
	}
	logf("built base %s for %s: %d packages, %.1f MB compressed, in %s", b.Name, p, len(pkgs), float64(buf.Len())/1e6, time.Since(start).Round(time.Second/10))
	res.Layer, err = tarball.LayerFromFile(res.Path, tarball.WithMediaType(types.OCILayer))
	return res, err
}

// lockDir takes an exclusive lock on dir (creating it) until unlock is called, so that
// builds sharing a cache or an output directory (parallel test packages, a `make image`
// while the lab starts) take turns instead of writing the same files at once.
func lockDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}
