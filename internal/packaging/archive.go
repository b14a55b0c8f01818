package packaging

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
	"time"
)

// File is one entry of an archive or an image layer.
type File struct {
	// Name is the slash-separated path inside the archive; a trailing "/" makes a directory.
	Name string
	// Mode holds the permission bits (0o755 for executables).
	Mode fs.FileMode
	// Data is the content of a regular file.
	Data []byte
	// Link, when set, makes the entry a symbolic link to it.
	Link string
	// UID and GID own the entry (root when zero).
	UID, GID int
}

// modeBits is the tar mode of m: permissions plus setuid, setgid and sticky bits.
func modeBits(m fs.FileMode) int64 {
	bits := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		bits |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		bits |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		bits |= 0o1000 // c_ISVTX, for /tmp
	}
	return bits
}

// writeTar writes files as a tar stream that depends only on its arguments: entries sorted
// by name, owner root (0:0, no user or group names), one fixed mtime, ustar headers without
// access or change times. Two calls with the same files give the same bytes.
func writeTar(w io.Writer, files []File, mtime time.Time) error {
	files = slices.Clone(files)
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	tw := tar.NewWriter(w)
	for i, f := range files {
		if i > 0 && files[i-1].Name == f.Name {
			return fmt.Errorf("tar: duplicate entry %s", f.Name)
		}
		hdr := &tar.Header{
			Name:     f.Name,
			Mode:     modeBits(f.Mode),
			Uid:      f.UID,
			Gid:      f.GID,
			ModTime:  mtime.UTC().Truncate(time.Second),
			Typeflag: tar.TypeReg,
			Size:     int64(len(f.Data)),
			Format:   tar.FormatUSTAR,
		}
		switch {
		case f.Link != "":
			hdr.Typeflag, hdr.Linkname, hdr.Size, hdr.Mode = tar.TypeSymlink, f.Link, 0, 0o777
		case strings.HasSuffix(f.Name, "/"):
			hdr.Typeflag, hdr.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("tar header %s: %w", f.Name, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.Data); err != nil {
				return fmt.Errorf("tar %s: %w", f.Name, err)
			}
		}
	}
	return tw.Close()
}

// writeTarGz is writeTar through gzip with an empty header (no name, mtime 0), so the
// compressed bytes are as reproducible as the tar stream.
func writeTarGz(w io.Writer, files []File, mtime time.Time) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return err
	}
	if err := writeTar(zw, files, mtime); err != nil {
		return err
	}
	return zw.Close()
}
