package packaging

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"sigs.k8s.io/yaml"
)

const (
	testVersion = "v1.2.3-test.1"
	testCommit  = "0123abc"
	testRepo    = "registry.example.test/mcnet/components"
)

var lowerSha256 = regexp.MustCompile(`^[a-f0-9]{64}$`)

// repoRoot is the module root, two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "krew.yaml")); err != nil {
		t.Fatalf("repository root: %v", err)
	}
	return root
}

func dist(t *testing.T, root string) *Result {
	t.Helper()
	res, err := Dist(t.Context(), Options{
		Root:            root,
		OutDir:          t.TempDir(),
		Version:         testVersion,
		Commit:          testCommit,
		Epoch:           time.Unix(0, 0),
		ImageRepository: testRepo,
		// The repository's cache, not the snapshot's: Debian packages download once.
		CacheDir: filepath.Join(repoRoot(t), "bin", "debian"),
	})
	if err != nil {
		t.Fatalf("Dist: %v", err)
	}
	return res
}

// TestDist builds the release the way `make dist` does, twice, checks the archives and the
// krew manifest against krew's rules and each other, and installs the plugin with the
// real krew, offline, from the manifest and the local archive.
func TestDist(t *testing.T) {
	if testing.Short() {
		t.Skip("builds kubectl-mcnet for four platforms and krew")
	}
	repo := repoRoot(t)
	root := snapshot(t, repo)
	license, err := os.ReadFile(filepath.Join(root, "LICENSE"))
	if err != nil {
		t.Fatal(err)
	}
	res := dist(t, root)

	t.Run("manifest", func(t *testing.T) { checkManifest(t, res) })
	for _, p := range PluginPlatforms {
		t.Run("archive "+p.suffix(), func(t *testing.T) { checkArchive(t, res.Archives[p].Path, p, license) })
	}
	t.Run("SHA256SUMS", func(t *testing.T) { checkSums(t, res) })
	if res.Image.Path != "" {
		t.Run("image", func(t *testing.T) {
			checkImage(t, res.ImageLayout, res.Image.Path, testRepo+":"+testVersion, res.ImageBinaries, 2)
		})
	} else {
		t.Log("no in-cluster commands under cmd/: TestImage covers the image format")
	}

	// Same sources, version and epoch: the same bytes, or a release cannot be verified.
	t.Run("reproducible", func(t *testing.T) {
		again := dist(t, root)
		if diff := cmp.Diff(sums(res), sums(again)); diff != "" {
			t.Errorf("a second build differs (-first +second):\n%s", diff)
		}
	})

	t.Run("krew install", func(t *testing.T) { krewInstall(t, repo, res) })
}

// snapshot copies the module's sources (what Git tracks or would track, as they are in the
// work tree) to a temporary directory, so that both builds of TestDist see one tree even
// while someone edits the repository.
func snapshot(t *testing.T, root string) string {
	t.Helper()
	ls := exec.CommandContext(t.Context(), "git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	ls.Dir = root
	out, err := ls.Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	dst := t.TempDir()
	for _, f := range strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00") {
		data, err := os.ReadFile(filepath.Join(root, f))
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted in the work tree
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dst, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// sums maps each artifact's file name to its sha256.
func sums(r *Result) map[string]string {
	m := map[string]string{filepath.Base(r.Manifest.Path): r.Manifest.Sha256}
	for _, a := range r.Archives {
		m[filepath.Base(a.Path)] = a.Sha256
	}
	if r.Image.Path != "" {
		m[filepath.Base(r.Image.Path)] = r.Image.Sha256
	}
	return m
}

func fileSha256(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// checkManifest applies krew's manifest rules (krew's validation and krew-index's review
// rules) to dist/mcnet.yaml and checks it points at the archives that were built.
func checkManifest(t *testing.T, res *Result) {
	data, err := os.ReadFile(res.Manifest.Path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParsePlugin(data)
	if err != nil {
		t.Fatal(err)
	}
	if p.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || p.Kind != "Plugin" {
		t.Errorf("apiVersion/kind = %s/%s, want krew.googlecontainertools.github.com/v1alpha2/Plugin", p.APIVersion, p.Kind)
	}
	if want := strings.TrimSuffix(filepath.Base(res.Manifest.Path), ".yaml"); p.Metadata.Name != want {
		t.Errorf("metadata.name = %q, want %q (krew requires the file name)", p.Metadata.Name, want)
	}
	if p.Spec.Version != testVersion {
		t.Errorf("spec.version = %q, want %q", p.Spec.Version, testVersion)
	}
	if d := p.Spec.ShortDescription; d == "" || len(d) > 50 || strings.ContainsAny(d, "\r\n") {
		t.Errorf("shortDescription %q: want one line of 1 to 50 characters (%d)", d, len(d))
	}
	if p.Spec.Description == "" || p.Spec.Homepage != "https://github.com/mcnet-io/mcnet" {
		t.Errorf("description %q, homepage %q: want a description and the project's homepage", p.Spec.Description, p.Spec.Homepage)
	}
	var got []string
	for _, pl := range p.Spec.Platforms {
		plat := Platform{OS: pl.Selector.MatchLabels["os"], Arch: pl.Selector.MatchLabels["arch"]}
		got = append(got, plat.String())
		if len(pl.Selector.MatchLabels) != 2 {
			t.Errorf("%s: selector %v, want exactly os and arch", plat, pl.Selector.MatchLabels)
		}
		wantURI := "https://github.com/mcnet-io/mcnet/releases/download/" + testVersion + "/" + ArchiveName(plat)
		if pl.URI != wantURI {
			t.Errorf("%s: uri %s, want %s", plat, pl.URI, wantURI)
		}
		if !lowerSha256.MatchString(pl.Sha256) {
			t.Errorf("%s: sha256 %q is not 64 lowercase hex digits", plat, pl.Sha256)
		}
		if a, ok := res.Archives[plat]; !ok {
			t.Errorf("%s: no archive built", plat)
		} else if sum := fileSha256(t, a.Path); pl.Sha256 != sum {
			t.Errorf("%s: sha256 %s, but %s has %s", plat, pl.Sha256, filepath.Base(a.Path), sum)
		}
		if pl.Bin != pluginBinary {
			t.Errorf("%s: bin %q, want %q", plat, pl.Bin, pluginBinary)
		}
		var from []string
		for _, f := range pl.Files {
			from = append(from, f.From)
			if f.To != "." {
				t.Errorf("%s: files: %s goes to %q, want .", plat, f.From, f.To)
			}
		}
		slices.Sort(from)
		if diff := cmp.Diff([]string{"LICENSE", pluginBinary, completionShim}, from); diff != "" {
			t.Errorf("%s: files (-want +got):\n%s", plat, diff)
		}
	}
	slices.Sort(got)
	if diff := cmp.Diff([]string{"darwin/amd64", "darwin/arm64", "linux/amd64", "linux/arm64"}, got); diff != "" {
		t.Errorf("platforms (-want +got):\n%s", diff)
	}
}

// tarEntry is a tar header's fields that matter to a user unpacking the archive.
type tarEntry struct {
	Name     string
	Mode     int64
	UID, GID int
	ModTime  time.Time
}

func readTar(t *testing.T, r io.Reader) ([]tarEntry, map[string][]byte) {
	t.Helper()
	tr := tar.NewReader(r)
	var entries []tarEntry
	data := map[string][]byte{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return entries, data
		}
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, tarEntry{h.Name, h.Mode, h.Uid, h.Gid, h.ModTime.UTC()})
		if data[h.Name], err = io.ReadAll(tr); err != nil {
			t.Fatal(err)
		}
	}
}

func checkArchive(t *testing.T, path string, p Platform, license []byte) {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if !zr.ModTime.IsZero() || zr.Name != "" {
		t.Errorf("gzip header has mtime %v, name %q: want neither", zr.ModTime, zr.Name)
	}
	entries, data := readTar(t, zr)
	epoch := time.Unix(0, 0).UTC()
	want := []tarEntry{
		{"LICENSE", 0o644, 0, 0, epoch},
		{pluginBinary, 0o755, 0, 0, epoch},
		{completionShim, 0o755, 0, 0, epoch},
	}
	if diff := cmp.Diff(want, entries); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
	if !bytes.Equal(data["LICENSE"], license) {
		t.Error("LICENSE differs from the repository's")
	}
	shim := string(data[completionShim])
	if !strings.HasPrefix(shim, "#!/usr/bin/env sh\n") || !strings.Contains(shim, "\nexec kubectl-mcnet __complete \"$@\"\n") {
		t.Errorf("completion shim:\n%s\nwant a sh script that execs kubectl-mcnet __complete", shim)
	}
	checkBinary(t, pluginBinary, data[pluginBinary], p)
}

// checkBinary checks bin is an executable for p: ELF for linux, Mach-O for darwin.
func checkBinary(t *testing.T, name string, bin []byte, p Platform) {
	t.Helper()
	switch p.OS {
	case "linux":
		f, err := elf.NewFile(bytes.NewReader(bin))
		if err != nil {
			t.Errorf("%s for %s is not ELF: %v", name, p, err)
			return
		}
		want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[p.Arch]
		if f.Machine != want || f.Type != elf.ET_EXEC {
			t.Errorf("%s for %s: ELF %v %v, want %v executable", name, p, f.Machine, f.Type, want)
		}
	case "darwin":
		// Mach-O 64-bit magic, little endian, then the CPU type.
		want := map[string][]byte{"amd64": {0xcf, 0xfa, 0xed, 0xfe, 0x07, 0, 0, 0x01}, "arm64": {0xcf, 0xfa, 0xed, 0xfe, 0x0c, 0, 0, 0x01}}[p.Arch]
		if !bytes.HasPrefix(bin, want) {
			t.Errorf("%s for %s does not start with the Mach-O header % x", name, p, want)
		}
	}
}

func checkSums(t *testing.T, res *Result) {
	data, err := os.ReadFile(filepath.Join(filepath.Dir(res.Manifest.Path), "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		sum, file, ok := strings.Cut(line, "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q is not `sum  file`", line)
		}
		got[file] = sum
	}
	if diff := cmp.Diff(sums(res), got); diff != "" {
		t.Errorf("SHA256SUMS (-want +got):\n%s", diff)
	}
}

// krewInstall builds the pinned krew (cached in bin/) and installs mcnet with it the way a
// user would from a release, but offline: the manifest and archive are local, and
// `install --manifest` does not read the index. Running the plugin through krew's bin/
// symlink is exactly what `kubectl mcnet` does.
func krewInstall(t *testing.T, root string, res *Result) {
	host := Platform{OS: runtime.GOOS, Arch: runtime.GOARCH}
	archive, ok := res.Archives[host]
	if !ok {
		t.Skipf("no kubectl-mcnet archive for this host (%s)", host)
	}
	build := exec.CommandContext(t.Context(), filepath.Join(root, "hack/build-tools.sh"), "krew")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("hack/build-tools.sh krew: %v\n%s", err, out)
	}
	krew, err := filepath.Glob(filepath.Join(root, "bin/krew/*/krew"))
	if err != nil || len(krew) != 1 {
		t.Fatalf("want one krew under bin/krew, got %v (%v)", krew, err)
	}

	krewRoot := t.TempDir()
	env := append(os.Environ(), "KREW_ROOT="+krewRoot, "KREW_NO_UPGRADE_CHECK=1", "HOME="+t.TempDir())
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), name, args...)
		cmd.Env = append(env, "PATH="+filepath.Join(krewRoot, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	out := run(krew[0], "install", "--manifest="+res.Manifest.Path, "--archive="+archive.Path)
	t.Logf("krew install:\n%s", out)

	plugin := filepath.Join(krewRoot, "bin", pluginBinary)
	if fi, err := os.Lstat(plugin); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Fatalf("krew did not link %s into its bin/: %v", pluginBinary, err)
	}
	if got := run(plugin, "version"); !strings.Contains(got, testVersion) {
		t.Errorf("kubectl mcnet version printed %q, want it to name %s", got, testVersion)
	}
	// krew records what it installed in a receipt (`krew list` reads the index as well,
	// which an offline install never fetched).
	receipt, err := os.ReadFile(filepath.Join(krewRoot, "receipts", PluginName+".yaml"))
	if err != nil {
		t.Fatalf("krew wrote no receipt: %v", err)
	}
	var r struct {
		Spec struct{ Version string } `json:"spec"`
	}
	if err := yaml.Unmarshal(receipt, &r); err != nil || r.Spec.Version != testVersion {
		t.Errorf("receipt: version %q (%v), want %s", r.Spec.Version, err, testVersion)
	}

	// The shim sits in the plugin's store directory (the caveat says to link it onto PATH);
	// run from there it must complete the plugin's verbs through kubectl-mcnet on PATH.
	shim := filepath.Join(krewRoot, "store", PluginName, testVersion, completionShim)
	if got := run(shim, ""); !strings.Contains(got, "version") || !strings.Contains(got, "render") {
		t.Errorf("%s \"\" printed %q, want the plugin's verbs", completionShim, got)
	}
}

// checkImage reads the image back from its OCI layout and from its tar, and checks each
// platform's image holds the in-cluster binaries at /<name>, executable, for its platform,
// with the OCI labels and no entrypoint.
func checkImage(t *testing.T, layoutDir, tarPath, ref string, binaries []string, wantLayers int) {
	t.Helper()
	fromTar := t.TempDir()
	untar(t, tarPath, fromTar)
	var digests []v1.Hash
	for _, dir := range []string{layoutDir, fromTar} {
		digests = append(digests, checkLayout(t, dir, ref, binaries, wantLayers))
	}
	if digests[0] != digests[1] {
		t.Errorf("%s holds index %s, the layout %s", filepath.Base(tarPath), digests[1], digests[0])
	}
}

func checkLayout(t *testing.T, dir, ref string, binaries []string, wantLayers int) v1.Hash {
	t.Helper()
	tag, err := name.NewTag(ref, name.StrictValidation)
	if err != nil {
		t.Fatal(err)
	}
	lp, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("read OCI layout: %v", err)
	}
	top, err := lp.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(top.Manifests) != 1 {
		t.Fatalf("index.json lists %d entries, want one image index", len(top.Manifests))
	}
	desc := top.Manifests[0]
	wantAnn := map[string]string{"org.opencontainers.image.ref.name": tag.TagStr(), "io.containerd.image.name": tag.Name()}
	if diff := cmp.Diff(wantAnn, desc.Annotations); diff != "" {
		t.Errorf("index.json annotations (-want +got):\n%s", diff)
	}
	idx, err := lp.ImageIndex(desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var platforms []string
	for _, m := range im.Manifests {
		p := Platform{OS: m.Platform.OS, Arch: m.Platform.Architecture}
		platforms = append(platforms, p.String())
		img, err := idx.Image(m.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.OS != p.OS || cfg.Architecture != p.Arch || !cfg.Created.Time.Equal(time.Unix(0, 0)) {
			t.Errorf("%s: config says %s/%s created %v, want %s created at the epoch", p, cfg.OS, cfg.Architecture, cfg.Created, p)
		}
		if len(cfg.Config.Entrypoint) != 0 || len(cfg.Config.Cmd) != 0 {
			t.Errorf("%s: entrypoint %q cmd %q, want none (the manifests set them)", p, cfg.Config.Entrypoint, cfg.Config.Cmd)
		}
		if cfg.Config.User != ImageUser {
			t.Errorf("%s: user %q, want %q (numeric, so a kubelet can verify runAsNonRoot)", p, cfg.Config.User, ImageUser)
		}
		for k, want := range map[string]string{
			"org.opencontainers.image.source":   "https://github.com/mcnet-io/mcnet",
			"org.opencontainers.image.version":  testVersion,
			"org.opencontainers.image.licenses": "Apache-2.0",
		} {
			if got := cfg.Config.Labels[k]; got != want {
				t.Errorf("%s: label %s = %q, want %q", p, k, got, want)
			}
		}
		layers, err := img.Layers()
		if err != nil || len(layers) != wantLayers {
			t.Fatalf("%s: %d layers (%v), want %d", p, len(layers), err, wantLayers)
		}
		rc, err := layers[len(layers)-1].Uncompressed() // mcnet's own, over the base
		if err != nil {
			t.Fatal(err)
		}
		entries, data := readTar(t, rc)
		rc.Close()
		modes := map[string]int64{}
		for _, e := range entries {
			modes[e.Name] = e.Mode
		}
		for _, b := range binaries {
			if modes[b] != 0o755 {
				t.Errorf("%s: /%s has mode %o, want 0755", p, b, modes[b])
			}
			checkBinary(t, b, data[b], p)
		}
	}
	slices.Sort(platforms)
	if diff := cmp.Diff([]string{"linux/amd64", "linux/arm64"}, platforms); diff != "" {
		t.Errorf("image platforms (-want +got):\n%s", diff)
	}
	return desc.Digest
}

func untar(t *testing.T, path, dir string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	entries, data := readTar(t, f)
	for _, e := range entries {
		p := filepath.Join(dir, filepath.FromSlash(e.Name))
		if strings.HasSuffix(e.Name, "/") {
			err = os.MkdirAll(p, 0o755)
		} else {
			err = os.WriteFile(p, data[e.Name], 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestImage builds the image from stand-in binaries (ELF headers for each platform) and
// checks the layout, its tar, and that two builds give the same bytes. TestDist checks
// the image of the real in-cluster commands, TestContainerdRunsTheImages runs it.
func TestImage(t *testing.T) {
	binaries := []string{"mcnet-controller", "mcnet-gateway", "mcnet-route-agent"}
	files := map[Platform][]File{}
	for _, p := range ImagePlatforms {
		for _, b := range binaries {
			files[p] = append(files[p], File{Name: b, Mode: 0o755, Data: fakeELF(t, p)})
		}
	}
	meta := ImageMeta{Version: testVersion, Revision: testCommit, Created: time.Unix(0, 0)}
	write := func() string {
		idx, err := BuildImage(files, meta)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		tag, _ := name.NewTag(testRepo+":"+testVersion, name.StrictValidation)
		if err := WriteImage(idx, tag, filepath.Join(dir, "oci"), filepath.Join(dir, "image.tar"), meta.Created); err != nil {
			t.Fatal(err)
		}
		checkImage(t, filepath.Join(dir, "oci"), filepath.Join(dir, "image.tar"), tag.String(), binaries, 1)
		return fileSha256(t, filepath.Join(dir, "image.tar"))
	}
	if first, second := write(), write(); first != second {
		t.Errorf("two builds of the image differ: %s, %s", first, second)
	}
}

// fakeELF is a minimal ELF executable header for p, enough for debug/elf.
func fakeELF(t *testing.T, p Platform) []byte {
	t.Helper()
	machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[p.Arch]
	h := make([]byte, 64)
	copy(h, elf.ELFMAG)
	h[elf.EI_CLASS], h[elf.EI_DATA], h[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)
	h[16] = byte(elf.ET_EXEC)
	h[18], h[19] = byte(machine), byte(machine>>8)
	h[20] = byte(elf.EV_CURRENT)
	h[52] = 64 // e_ehsize
	return h
}

func TestRenderManifest(t *testing.T) {
	tmpl := []byte("version: {{ .TagName }}\n  - x:\n    {{ addURIAndSha \"https://e.test/{{ .TagName }}/a.tar.gz\" .TagName }}\n")
	got, err := RenderManifest(tmpl, "v1.0.0", map[string]string{"a.tar.gz": "ab12"})
	if err != nil {
		t.Fatal(err)
	}
	want := "version: v1.0.0\n  - x:\n    uri: https://e.test/v1.0.0/a.tar.gz\n    sha256: ab12\n"
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, err := RenderManifest(tmpl, "v1.0.0", nil); err == nil || !strings.Contains(err.Error(), "no archive a.tar.gz") {
		t.Errorf("a template naming an archive that was not built: err = %v, want no archive a.tar.gz", err)
	}
}

func TestNormalizeVersion(t *testing.T) {
	for in, want := range map[string]string{
		"v0.1.0":                  "v0.1.0",
		"v1.2.3-rc.1":             "v1.2.3-rc.1",
		"v0.1.0-3-gabc1234-dirty": "v0.1.0-3-gabc1234-dirty",
		"a47c965":                 "v0.0.0-dev-a47c965",
		"a47c965-dirty":           "v0.0.0-dev-a47c965-dirty",
		"0.1.0":                   "v0.0.0-dev-0-1-0",
		"v1.0.0+build.5":          "v0.0.0-dev-v1-0-0-build-5",
		"":                        "v0.0.0-dev",
	} {
		if got := NormalizeVersion(in); got != want {
			t.Errorf("NormalizeVersion(%q) = %q, want %q", in, got, want)
		}
		if got := NormalizeVersion(in); !semverRe.MatchString(got) {
			t.Errorf("NormalizeVersion(%q) = %q is not a semantic version", in, got)
		}
	}
}

// TestWriteImagesInPlace writes a layout twice unchanged (the files a registry may be
// serving stay as they are) and then changed (swapped for the new one, no stale blobs).
func TestWriteImagesInPlace(t *testing.T) {
	build := func(data string) v1.ImageIndex {
		files := map[Platform][]File{{"linux", "amd64"}: {{Name: "x", Mode: 0o644, Data: []byte(data)}}}
		idx, err := BuildImage(files, ImageMeta{Version: testVersion, Created: time.Unix(0, 0)})
		if err != nil {
			t.Fatal(err)
		}
		return idx
	}
	dir := t.TempDir()
	layoutDir, tarPath := filepath.Join(dir, "img-oci"), filepath.Join(dir, "img.tar")
	refs := []string{"docker.io/alpine/socat:1.7.4.4", "registry.k8s.io/pause:3.6"}
	write := func(idx v1.ImageIndex) (os.FileInfo, os.FileInfo) {
		t.Helper()
		if err := WriteImages([]TaggedImage{{Index: idx, Refs: refs}}, layoutDir, tarPath, time.Unix(0, 0)); err != nil {
			t.Fatal(err)
		}
		li, err := os.Stat(filepath.Join(layoutDir, "index.json"))
		if err != nil {
			t.Fatal(err)
		}
		ti, err := os.Stat(tarPath)
		if err != nil {
			t.Fatal(err)
		}
		return li, ti
	}
	l1, t1 := write(build("a"))
	l2, t2 := write(build("a"))
	if !os.SameFile(l1, l2) || !os.SameFile(t1, t2) {
		t.Error("an unchanged image rewrote the layout or its tar")
	}
	write(build("b"))
	lp, err := layout.ImageIndexFromPath(layoutDir)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := lp.IndexManifest()
	want, _ := build("b").Digest()
	if len(m.Manifests) != len(refs) || m.Manifests[0].Digest != want {
		t.Fatalf("index.json after a change: %+v, want %d entries of %s", m.Manifests, len(refs), want)
	}
	for i, ref := range refs {
		if got := m.Manifests[i].Annotations["io.containerd.image.name"]; got != ref {
			t.Errorf("entry %d names %q, want %q", i, got, ref)
		}
	}
	// The new index, manifest, config and layer, and nothing of the old image.
	blobs, _ := os.ReadDir(filepath.Join(layoutDir, "blobs", "sha256"))
	if len(blobs) != 4 {
		t.Errorf("%d blobs after the change, want the new image's 4 only", len(blobs))
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".*")); len(leftovers) != 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
}
