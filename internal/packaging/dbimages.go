package packaging

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The databases of the example in examples/databases/ (docs/databases.md), which the
// database suite runs across clusters: etcd, the pinned build the lab's control planes
// run, and Debian's PostgreSQL.
const (
	// EtcdVersion is the etcd hack/build-tools.sh builds into bin/etcd/<version>/etcd.
	EtcdVersion = "v3.6.8"
	// PostgreSQLMajor is the major version of Debian's PostgreSQL (bookworm: 15).
	PostgreSQLMajor = "15"
)

// PostgreSQLPackages are the Debian packages of the PostgreSQL image: the server and
// its client (psql, pg_basebackup) and a shell with the tools the example's scripts use.
var PostgreSQLPackages = []string{
	"base-files", "netbase", "dash", "coreutils", "grep", "sed",
	"postgresql-" + PostgreSQLMajor, "postgresql-client-" + PostgreSQLMajor,
}

// EtcdPackages are the Debian packages under the (static) etcd binary: the example's
// client script runs in the same image (bash, curl against etcd's JSON gateway, sed,
// base64).
var EtcdPackages = []string{"base-files", "netbase", "bash", "coreutils", "grep", "sed", "curl"}

// dbImage is one database image BuildImages writes: OutDir/<name>-oci/, <name>.tar.
type dbImage struct {
	name   string
	ref    string
	base   DebianBase
	extra  func() (v1.Layer, string, error) // a layer on the base and its history, or nil
	config v1.Config
	title  string
}

// databaseImages are the images of the example databases, named beside repo:
// <repo's registry>/etcd:<etcd version> and …/postgresql:<major>. The etcd image needs
// the pinned etcd binary (`make tools`); without it the image is left out and said so,
// and the database suite fails naming it.
func (o *ImagesOptions) databaseImages(logf func(string, ...any)) []dbImage {
	path := "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	pgBin := "/usr/lib/postgresql/" + PostgreSQLMajor + "/bin"
	imgs := []dbImage{{
		name: "postgresql", ref: sibling(o.ImageRepository, "postgresql") + ":" + PostgreSQLMajor,
		base:  DebianBase{Name: "postgresql", Packages: PostgreSQLPackages, Files: accountFiles("/bin/sh")},
		title: "PostgreSQL " + PostgreSQLMajor + " (Debian packages, mcnet's database example)",
		// Debian keeps the server's programs out of PATH (postgresql-common wraps
		// them); the example runs them directly, as the unprivileged user.
		config: v1.Config{Env: []string{"PATH=" + pgBin + ":/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "PGDATA=/var/lib/postgresql/data/pgdata"},
			User: fmt.Sprint(nonrootUID) + ":" + fmt.Sprint(nonrootUID), Cmd: []string{"postgres"}},
	}}
	bin := filepath.Join(o.Root, "bin", "etcd", EtcdVersion, "etcd")
	if _, err := os.Stat(bin); err != nil {
		logf("etcd image left out: %s is not built (make tools builds it)", bin)
		return imgs
	}
	return append(imgs, dbImage{
		name: "etcd", ref: sibling(o.ImageRepository, "etcd") + ":" + EtcdVersion,
		base:  DebianBase{Name: "etcd", Packages: EtcdPackages, Files: accountFiles("/bin/bash")},
		extra: func() (v1.Layer, string, error) { return o.etcdLayer(bin) },
		title: "etcd " + EtcdVersion + " (mcnet's pinned build, database example)",
		config: v1.Config{Env: []string{path}, Entrypoint: []string{"/usr/local/bin/etcd"},
			User: fmt.Sprint(nonrootUID) + ":" + fmt.Sprint(nonrootUID)},
	})
}

// etcdLayer is /usr/local/bin/etcd, cached by the binary's digest under
// CacheDir/bases/ (compressing 26 MB on every `make image` would cost seconds).
func (o *ImagesOptions) etcdLayer(bin string) (v1.Layer, string, error) {
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(append(data, []byte(o.Epoch.UTC().Format(time.RFC3339))...))
	path := filepath.Join(o.CacheDir, "bases", "etcd-bin-"+hex.EncodeToString(sum[:8])+".tar.gz")
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		var buf bytes.Buffer
		files := []File{{Name: "usr/", Mode: 0o755}, {Name: "usr/local/", Mode: 0o755}, {Name: "usr/local/bin/", Mode: 0o755},
			{Name: "usr/local/bin/etcd", Mode: 0o755, Data: data}}
		if err := writeTarGz(&buf, files, o.Epoch); err != nil {
			return nil, "", err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, "", err
		}
		if err := os.WriteFile(path+".tmp", buf.Bytes(), 0o644); err != nil {
			return nil, "", err
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			return nil, "", err
		}
	}
	l, err := tarball.LayerFromFile(path, tarball.WithMediaType(types.OCILayer))
	return l, "internal/packaging: etcd " + EtcdVersion + " (bin/etcd)", err
}

// buildDatabaseImages builds and writes the example databases' images.
func (o *ImagesOptions) buildDatabaseImages(ctx context.Context, meta ImageMeta, logf func(string, ...any)) ([]LabImage, error) {
	var out []LabImage
	for _, d := range o.databaseImages(logf) {
		b, err := BuildBase(ctx, d.base, o.Platform, o.CacheDir, o.Epoch, logf)
		if err != nil {
			return nil, err
		}
		layers := []v1.Layer{b.Layer}
		history := []string{"internal/packaging: Debian packages " + strings.Join(d.base.Packages, " ")}
		if d.extra != nil {
			l, h, err := d.extra()
			if err != nil {
				return nil, fmt.Errorf("image %s: %w", d.name, err)
			}
			layers, history = append(layers, l), append(history, h)
		}
		labels := meta.labels()
		labels["org.opencontainers.image.title"] = d.title
		labels["org.opencontainers.image.description"] = d.title
		idx, err := singleImage(o.Platform, o.Epoch, d.config, labels, layers, history)
		if err != nil {
			return nil, err
		}
		imgs, err := o.write(d.name, []TaggedImage{{Index: idx, Refs: []string{d.ref}}}, []string{d.name})
		if err != nil {
			return nil, err
		}
		out = append(out, imgs...)
	}
	return out, nil
}
