package packaging

import (
	"archive/tar"
	"bytes"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// debTar is a package's data archive as dpkg-deb --fsys-tarfile gives it.
func debTar(t *testing.T, entries []tar.Header, data map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		h.Size = int64(len(data[h.Name]))
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(data[h.Name])); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// listing renders a layer tar as one line per entry.
func listing(t *testing.T, layer []byte) []string {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(layer))
	var lines []string
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		l := string(h.Typeflag) + " " + h.Name
		switch h.Typeflag {
		case tar.TypeSymlink:
			l += " -> " + h.Linkname
		case tar.TypeLink:
			l += " => " + h.Linkname
		}
		if !h.ModTime.Equal(time.Unix(0, 0)) || h.Uname != "" {
			l += " (mtime or owner name kept)"
		}
		lines = append(lines, l)
	}
	return lines
}

// TestRootfs unpacks two stand-in packages the way the base builder does: onto merged
// /usr (moved relative links still resolve), without documentation, hard links written
// after the file they name, alternatives linked, the builder's files added, parents made.
func TestRootfs(t *testing.T) {
	dir := func(n string) tar.Header { return tar.Header{Name: n, Typeflag: tar.TypeDir, Mode: 0o755} }
	reg := func(n string, mode int64) tar.Header { return tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: mode} }
	sym := func(n, to string) tar.Header { return tar.Header{Name: n, Typeflag: tar.TypeSymlink, Linkname: to} }
	r := newRootfs()
	a := debTar(t, []tar.Header{
		dir("./"), dir("./bin/"), reg("./bin/dash", 0o755), sym("./bin/sh", "dash"),
		dir("./usr/"), dir("./usr/bin/"), sym("./usr/bin/rel", "../../bin/dash"),
		reg("./usr/bin/nc.openbsd", 0o755), {Name: "./usr/bin/nc.hard", Typeflag: tar.TypeLink, Linkname: "./usr/bin/nc.openbsd"},
		dir("./usr/share/"), dir("./usr/share/doc/"), dir("./usr/share/doc/a/"),
		reg("./usr/share/doc/a/copyright", 0o644), reg("./usr/share/doc/a/changelog.gz", 0o644),
		dir("./usr/share/man/"), reg("./usr/share/man/nc.1.gz", 0o644),
	}, map[string]string{"./bin/dash": "dash", "./usr/bin/nc.openbsd": "nc", "./usr/share/doc/a/copyright": "c"})
	if err := r.addTar(bytes.NewReader(a), "a"); err != nil {
		t.Fatal(err)
	}
	// A second package shipping a shared directory and an identical file is fine.
	b := debTar(t, []tar.Header{dir("./"), dir("./bin/"), reg("./bin/dash", 0o755)}, map[string]string{"./bin/dash": "dash"})
	if err := r.addTar(bytes.NewReader(b), "b"); err != nil {
		t.Fatalf("identical file in two packages: %v", err)
	}
	for _, al := range parseAlternatives([]byte("#!/bin/sh\nif true; then\n  update-alternatives \\\n   --install /bin/nc nc /bin/nc.openbsd 50 \\\n   --slave /bin/netcat netcat /bin/nc.openbsd \\\n   --slave /usr/share/man/man1/nc.1.gz nc.1.gz /usr/share/man/man1/nc_openbsd.1.gz\nfi\n")) {
		al.pkg = "a"
		r.alts[al.name] = al
	}
	if err := r.finish(map[string]string{"/usr/bin/awk": "/bin/dash"}, []File{{Name: "etc/passwd", Mode: 0o644, Data: []byte("root")}, {Name: "home/nonroot/", Mode: 0o755, UID: 65532, GID: 65532}}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := r.write(&buf, time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	got := listing(t, buf.Bytes())
	want := []string{
		"2 bin -> usr/bin",
		"5 etc/",
		"0 etc/passwd",
		"5 home/",
		"5 home/nonroot/",
		"2 lib -> usr/lib",
		"2 sbin -> usr/sbin",
		"5 usr/",
		"5 usr/bin/",
		"2 usr/bin/awk -> /usr/bin/dash",
		"0 usr/bin/dash",
		"2 usr/bin/nc -> /usr/bin/nc.openbsd",
		"0 usr/bin/nc.hard",
		"1 usr/bin/nc.openbsd => usr/bin/nc.hard",
		"2 usr/bin/netcat -> /usr/bin/nc.openbsd",
		"2 usr/bin/rel -> ../../bin/dash",
		"2 usr/bin/sh -> /usr/bin/dash",
		"5 usr/share/",
		"5 usr/share/doc/",
		"5 usr/share/doc/a/",
		"0 usr/share/doc/a/copyright",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("layer (-want +got):\n%s", diff)
	}
	var again bytes.Buffer
	if err := r.write(&again, time.Unix(0, 0)); err != nil || !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Errorf("a second write differs (%v)", err)
	}

	// Conflicts and dangling alternatives are errors naming what is wrong.
	c := debTar(t, []tar.Header{reg("./usr/bin/dash", 0o755)}, map[string]string{"./usr/bin/dash": "other"})
	if err := r.addTar(bytes.NewReader(c), "c"); err == nil || !strings.Contains(err.Error(), "packages a and c both ship /usr/bin/dash") {
		t.Errorf("conflicting file: %v", err)
	}
	if err := newRootfs().finish(map[string]string{"/usr/sbin/iptables": "/usr/sbin/iptables-wrapper"}, nil); err == nil || !strings.Contains(err.Error(), "/usr/sbin/iptables-wrapper, which no package ships") {
		t.Errorf("dangling alternative: %v", err)
	}
}

func TestParseAlternatives(t *testing.T) {
	script := `update-alternatives \
	  --install /usr/sbin/iptables iptables /usr/sbin/iptables-legacy 10 \
	  --slave /usr/sbin/iptables-save iptables-save /usr/sbin/iptables-legacy-save
        update-alternatives --install /usr/sbin/iptables iptables /usr/sbin/iptables-nft 20 --slave /usr/sbin/iptables-save iptables-save /usr/sbin/iptables-nft-save
PROGRAM=$(dpkg-divert --truename /bin/ping)
    # update-alternatives \
    #       --install /usr/bin/program program /usr/bin/alternative 50
`
	got := parseAlternatives([]byte(script))
	want := []alternative{
		{name: "iptables", link: "/usr/sbin/iptables", target: "/usr/sbin/iptables-legacy", prio: 10, slaves: [][2]string{{"/usr/sbin/iptables-save", "/usr/sbin/iptables-legacy-save"}}},
		{name: "iptables", link: "/usr/sbin/iptables", target: "/usr/sbin/iptables-nft", prio: 20, slaves: [][2]string{{"/usr/sbin/iptables-save", "/usr/sbin/iptables-nft-save"}}},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(alternative{})); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestAptErrors checks that a missing Debian package and missing host tools get one
// clear message naming them.
func TestAptErrors(t *testing.T) {
	t.Run("unknown package", func(t *testing.T) {
		if _, err := exec.LookPath("apt-get"); err != nil {
			t.Skip("no apt-get on this host")
		}
		a, err := newApt(t.Context(), debianArch("amd64"), t.TempDir(), t.Logf)
		if err != nil {
			t.Fatal(err)
		}
		if !a.native() {
			t.Skip("not a Debian amd64 host")
		}
		_, err = a.resolve(t.Context(), []string{"iptables", "no-such-package-mcnet"})
		if err == nil || !strings.Contains(err.Error(), "Debian package no-such-package-mcnet is not known to apt") {
			t.Errorf("resolve of an unknown package: %v", err)
		}
	})
	t.Run("no apt", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		_, err := newApt(t.Context(), "amd64", t.TempDir(), t.Logf)
		if err == nil || !strings.Contains(err.Error(), "needs apt-get (Debian package apt)") {
			t.Errorf("newApt without apt-get: %v", err)
		}
	})
}
