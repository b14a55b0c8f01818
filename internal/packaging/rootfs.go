package packaging

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// rootfsFormat versions what the builder does to packages' files; bump it when that
// changes, so cached bases are rebuilt.
const rootfsFormat = 1

// node is one path of a root filesystem being assembled.
type node struct {
	typ      byte // tar.TypeDir, TypeReg, TypeSymlink or TypeLink
	mode     int64
	uid, gid int
	link     string // symlink target, or the path a hard link names
	data     []byte
	pkg      string // the package (or "mcnet") that put it there
}

// rootfs assembles the files of Debian packages the way dpkg would unpack them onto a
// merged-/usr system, then does what the maintainer scripts would have done that a
// container needs.
type rootfs struct {
	nodes map[string]*node // by clean relative path ("usr/bin/sh")
	alts  map[string]alternative
}

func newRootfs() *rootfs {
	return &rootfs{nodes: map[string]*node{}, alts: map[string]alternative{}}
}

// mergedUsr maps a path the way Debian's merged /usr does: /bin, /sbin and /lib* are
// symlinks into /usr, so what packages ship there lives under /usr.
func mergedUsr(p string) string {
	first, _, _ := strings.Cut(p, "/")
	switch first {
	case "bin", "sbin", "lib", "lib32", "lib64", "libx32":
		return "usr/" + p
	}
	return p
}

// excluded are paths left out of every base, as Debian's own minimal images do with
// dpkg's path-exclude: documentation, manuals, translations. Copyright files stay.
func excluded(p string) bool {
	for _, dir := range []string{"usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian", "usr/share/linda", "usr/share/bug", "usr/share/menu", "usr/share/doc-base"} {
		if p == dir || strings.HasPrefix(p, dir+"/") {
			return true
		}
	}
	if rest, ok := strings.CutPrefix(p, "usr/share/doc/"); ok {
		_, file, nested := strings.Cut(rest, "/")
		return nested && file != "copyright"
	}
	return false
}

// cleanName turns a tar entry name ("./usr/bin/", "usr/bin") into a clean relative
// path; the root itself is "".
func cleanName(name string) string {
	p := path.Clean("/" + name)
	return strings.TrimPrefix(p, "/")
}

// addDeb unpacks one package: its data archive into the tree, its postinst's
// update-alternatives registrations into r.alts, and its control file into the
// package database scanners read (var/lib/dpkg/status.d/<package>).
func (r *rootfs) addDeb(ctx context.Context, debPath string, pkg debPackage) error {
	data, wait, err := debContents(ctx, debPath, "--fsys-tarfile")
	if err != nil {
		return err
	}
	err = r.addTar(data, pkg.Name)
	// Drain what is left (the tar end padding) so dpkg-deb does not die of a broken pipe.
	_, _ = io.Copy(io.Discard, data)
	if werr := wait(); err == nil {
		err = werr
	}
	if err != nil {
		return fmt.Errorf("unpack %s: %w", pkg, err)
	}

	ctrl, wait, err := debContents(ctx, debPath, "--ctrl-tarfile")
	if err != nil {
		return err
	}
	files, err := readTarFiles(ctrl)
	_, _ = io.Copy(io.Discard, ctrl)
	if werr := wait(); err == nil {
		err = werr
	}
	if err != nil {
		return fmt.Errorf("control files of %s: %w", pkg, err)
	}
	control, ok := files["control"]
	if !ok {
		return fmt.Errorf("%s has no control file", pkg)
	}
	status := "Status: install ok installed\n" + strings.TrimRight(string(control), "\n") + "\n"
	r.put("var/lib/dpkg/status.d/"+pkg.Name, &node{typ: tar.TypeReg, mode: 0o644, data: []byte(status), pkg: pkg.Name})
	for _, a := range parseAlternatives(files["postinst"]) {
		a.pkg = pkg.Name
		if cur, ok := r.alts[a.name]; !ok || a.prio > cur.prio {
			r.alts[a.name] = a
		}
	}
	return nil
}

// readTarFiles reads the regular files of a small tar stream by clean name.
func readTarFiles(rd io.Reader) (map[string][]byte, error) {
	files := map[string][]byte{}
	tr := tar.NewReader(rd)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files, nil
		}
		if err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if files[cleanName(h.Name)], err = io.ReadAll(tr); err != nil {
				return nil, err
			}
		}
	}
}

// addTar adds a package's data archive, mapped onto merged /usr.
func (r *rootfs) addTar(rd io.Reader, pkg string) error {
	tr := tar.NewReader(rd)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		orig := cleanName(h.Name)
		p := mergedUsr(orig)
		if p == "" || excluded(p) {
			continue
		}
		n := &node{typ: h.Typeflag, mode: h.Mode & 0o7777, uid: h.Uid, gid: h.Gid, pkg: pkg}
		switch h.Typeflag {
		case tar.TypeDir:
		case tar.TypeReg, tar.TypeRegA:
			n.typ = tar.TypeReg
			if n.data, err = io.ReadAll(tr); err != nil {
				return fmt.Errorf("read %s: %w", orig, err)
			}
		case tar.TypeSymlink:
			n.link = h.Linkname
			if p != orig && !path.IsAbs(h.Linkname) {
				// A relative link that moved under /usr would now point elsewhere: make
				// it name, absolutely, what it named where the package put it.
				n.link = "/" + mergedUsr(cleanName(path.Join(path.Dir(orig), h.Linkname)))
			}
		case tar.TypeLink:
			n.link = mergedUsr(cleanName(h.Linkname))
		default:
			return fmt.Errorf("%s: unsupported tar entry type %q", orig, h.Typeflag)
		}
		if err := r.add(p, n); err != nil {
			return err
		}
	}
}

// add puts n at p unless something else is there already: directories merge, identical
// files are shared, anything else is a conflict dpkg would refuse too.
func (r *rootfs) add(p string, n *node) error {
	cur, ok := r.nodes[p]
	switch {
	case !ok:
		r.nodes[p] = n
	case cur.typ == tar.TypeDir && n.typ == tar.TypeDir:
	case cur.typ == n.typ && cur.link == n.link && bytes.Equal(cur.data, n.data):
	default:
		return fmt.Errorf("packages %s and %s both ship /%s, differently", cur.pkg, n.pkg, p)
	}
	return nil
}

// put replaces whatever is at p with n (the builder's own files win).
func (r *rootfs) put(p string, n *node) { r.nodes[p] = n }

// alternative is one update-alternatives --install registration.
type alternative struct {
	name, link, target string
	prio               int
	slaves             [][2]string // link, target
	pkg                string
}

// parseAlternatives finds `update-alternatives --install LINK NAME PATH PRIORITY
// [--slave LINK NAME PATH]...` in a maintainer script (comment lines dropped, then line
// continuations joined: ucf's postinst carries a commented-out example).
func parseAlternatives(script []byte) []alternative {
	var code []string
	for _, line := range strings.Split(string(script), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			code = append(code, line)
		}
	}
	text := strings.ReplaceAll(strings.Join(code, "\n"), "\\\n", " ")
	var res []alternative
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		i := slices.Index(f, "update-alternatives")
		if i < 0 {
			continue
		}
		f = f[i+1:]
		var a *alternative
		for j := 0; j < len(f); j++ {
			switch f[j] {
			case "--install":
				if j+4 >= len(f) {
					continue
				}
				prio, err := strconv.Atoi(f[j+4])
				if err != nil {
					continue
				}
				if a != nil {
					res = append(res, *a)
				}
				a = &alternative{link: f[j+1], name: f[j+2], target: f[j+3], prio: prio}
				j += 4
			case "--slave":
				if a != nil && j+3 < len(f) {
					a.slaves = append(a.slaves, [2]string{f[j+1], f[j+3]})
					j += 3
				}
			}
		}
		if a != nil {
			res = append(res, *a)
		}
	}
	return res
}

// finish does the rest of what installing the packages would have done: the chosen
// alternatives' links (overrides win), the builder's files, the merged-/usr symlinks and
// any missing parent directory.
func (r *rootfs) finish(overrides map[string]string, files []File) error {
	links := map[string]alternative{}
	for _, a := range r.alts {
		for _, l := range append([][2]string{{a.link, a.target}}, a.slaves...) {
			link, target := mergedUsr(cleanName(l[0])), mergedUsr(cleanName(l[1]))
			if excluded(link) || excluded(target) {
				continue
			}
			links[link] = alternative{target: "/" + target, pkg: a.pkg}
		}
	}
	for l, t := range overrides {
		links[mergedUsr(cleanName(l))] = alternative{target: "/" + mergedUsr(cleanName(t)), pkg: "mcnet"}
	}
	for _, f := range files {
		if err := r.putFile(f); err != nil {
			return err
		}
	}
	for link, a := range links {
		if _, ok := r.nodes[strings.TrimPrefix(a.target, "/")]; !ok {
			return fmt.Errorf("alternative /%s (from %s) names %s, which no package ships", link, a.pkg, a.target)
		}
		r.put(link, &node{typ: tar.TypeSymlink, mode: 0o777, link: a.target, pkg: a.pkg})
	}
	for _, d := range []string{"bin", "sbin", "lib", "lib32", "lib64", "libx32"} {
		if _, ok := r.nodes["usr/"+d]; ok || d == "bin" || d == "sbin" || d == "lib" {
			r.put(d, &node{typ: tar.TypeSymlink, mode: 0o777, link: "usr/" + d, pkg: "mcnet"})
		}
	}
	for p := range r.nodes {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if _, ok := r.nodes[d]; ok {
				break
			}
			r.nodes[d] = &node{typ: tar.TypeDir, mode: 0o755, pkg: "mcnet"}
		}
	}
	for p, n := range r.nodes {
		if n.typ == tar.TypeLink {
			if t, ok := r.nodes[n.link]; !ok || t.typ != tar.TypeReg {
				return fmt.Errorf("/%s (from %s) is a hard link to /%s, which is not a regular file", p, n.pkg, n.link)
			}
		}
	}
	return nil
}

// putFile adds one of the builder's own files (its name mapped onto merged /usr).
func (r *rootfs) putFile(f File) error {
	p := mergedUsr(cleanName(f.Name))
	n := &node{typ: tar.TypeReg, mode: modeBits(f.Mode), uid: f.UID, gid: f.GID, data: f.Data, pkg: "mcnet"}
	switch {
	case f.Link != "":
		n.typ, n.mode, n.link, n.data = tar.TypeSymlink, 0o777, f.Link, nil
	case strings.HasSuffix(f.Name, "/"):
		n.typ, n.data = tar.TypeDir, nil
	}
	if p == "" {
		return fmt.Errorf("file %q names the root", f.Name)
	}
	r.put(p, n)
	return nil
}

// write writes the tree as one layer's tar: entries sorted (so parents come first), one
// mtime, numeric owners only. Of a group of hard links the first name holds the data.
func (r *rootfs) write(w io.Writer, mtime time.Time) error {
	names := make([]string, 0, len(r.nodes))
	for p := range r.nodes {
		names = append(names, p)
	}
	slices.Sort(names)
	// Hard links: make each group's first name (in write order) the file.
	first := map[string]string{} // link target → first name of its group
	for _, p := range names {
		n := r.nodes[p]
		key := p
		if n.typ == tar.TypeLink {
			key = n.link
		} else if n.typ != tar.TypeReg {
			continue
		}
		if _, ok := first[key]; !ok {
			first[key] = p
		}
	}
	tw := tar.NewWriter(w)
	for _, p := range names {
		n := r.nodes[p]
		h := &tar.Header{
			Name:    p,
			Mode:    n.mode,
			Uid:     n.uid,
			Gid:     n.gid,
			ModTime: mtime.UTC().Truncate(time.Second),
		}
		switch n.typ {
		case tar.TypeDir:
			h.Typeflag, h.Name = tar.TypeDir, p+"/"
		case tar.TypeSymlink:
			h.Typeflag, h.Linkname = tar.TypeSymlink, n.link
		case tar.TypeReg, tar.TypeLink:
			key := p
			data := n.data
			if n.typ == tar.TypeLink {
				key, data = n.link, r.nodes[n.link].data
				h.Mode, h.Uid, h.Gid = r.nodes[n.link].mode, r.nodes[n.link].uid, r.nodes[n.link].gid
			}
			if f := first[key]; f != p {
				h.Typeflag, h.Linkname = tar.TypeLink, f
			} else {
				h.Typeflag, h.Size = tar.TypeReg, int64(len(data))
				n = &node{data: data}
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("tar header /%s: %w", p, err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(n.data); err != nil {
				return fmt.Errorf("tar /%s: %w", p, err)
			}
		}
	}
	return tw.Close()
}
