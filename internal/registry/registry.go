// Package registry is a small read-only OCI distribution registry that serves images
// from OCI image layouts on disk, under the references they are given: enough for
// containerd and other clients to pull (GET and HEAD of /v2/, manifests by tag or digest,
// blobs, and tags/list), nothing to push. The lab runs one on loopback as every node's
// containerd mirror for docker.io, registry.k8s.io and ghcr.io, so third-party manifests
// run unmodified with mcnet's own images.
//
// A mirror request carries the upstream registry in the ns query parameter
// (/v2/alpine/socat/manifests/1.7.4.4?ns=docker.io); without it a repository name matches
// whichever served reference has that path, so `ctr pull 127.0.0.1:PORT/alpine/socat:...`
// works too.
package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// Image is one image to serve: the index.json entry of Layout annotated with each of Refs
// (io.containerd.image.name, as internal/packaging writes them).
type Image struct {
	// Layout is an OCI image layout directory.
	Layout string
	// Refs are full references: docker.io/alpine/socat:1.7.4.4, registry.k8s.io/pause:3.6.
	Refs []string
}

// Registry serves images; it is an http.Handler.
type Registry struct {
	repos map[string]*repo // by normalized host/path
}

// repo is one repository: its tags and every manifest and blob reachable from them.
type repo struct {
	name      string // host/path
	tags      map[string]v1.Descriptor
	manifests map[v1.Hash]v1.Descriptor
	blobs     map[v1.Hash]string // digest → layout it is in
	layoutOf  map[v1.Hash]string // manifest digest → layout
}

// New reads the images' layouts and returns a registry serving them. Every reference
// must name an entry of its layout's index.json.
func New(images ...Image) (*Registry, error) {
	r := &Registry{repos: map[string]*repo{}}
	var errs []error
	for _, img := range images {
		if err := r.add(img); err != nil {
			errs = append(errs, err)
		}
	}
	return r, errors.Join(errs...)
}

// FromLayouts serves every index.json entry of the layouts that names its image
// (io.containerd.image.name).
func FromLayouts(dirs ...string) (*Registry, error) {
	var images []Image
	for _, dir := range dirs {
		idx, err := layout.ImageIndexFromPath(dir)
		if err != nil {
			return nil, fmt.Errorf("image layout %s: %w", dir, err)
		}
		m, err := idx.IndexManifest()
		if err != nil {
			return nil, fmt.Errorf("image layout %s: %w", dir, err)
		}
		img := Image{Layout: dir}
		for _, d := range m.Manifests {
			if ref := d.Annotations[refAnnotation]; ref != "" {
				img.Refs = append(img.Refs, ref)
			}
		}
		images = append(images, img)
	}
	return New(images...)
}

const refAnnotation = "io.containerd.image.name"

func (r *Registry) add(img Image) error {
	lp, err := layout.FromPath(img.Layout)
	if err != nil {
		return fmt.Errorf("image layout %s: %w", img.Layout, err)
	}
	idx, err := lp.ImageIndex()
	if err != nil {
		return fmt.Errorf("image layout %s: %w", img.Layout, err)
	}
	top, err := idx.IndexManifest()
	if err != nil {
		return fmt.Errorf("image layout %s: %w", img.Layout, err)
	}
	for _, ref := range img.Refs {
		host, path, tag, err := parseRef(ref)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(top.Manifests, func(d v1.Descriptor) bool { return d.Annotations[refAnnotation] == ref })
		if i < 0 {
			return fmt.Errorf("image layout %s has no image named %s (index.json %s annotation)", img.Layout, ref, refAnnotation)
		}
		desc := top.Manifests[i]
		desc.Annotations = nil
		key := host + "/" + path
		rp := r.repos[key]
		if rp == nil {
			rp = &repo{name: key, tags: map[string]v1.Descriptor{}, manifests: map[v1.Hash]v1.Descriptor{}, blobs: map[v1.Hash]string{}, layoutOf: map[v1.Hash]string{}}
			r.repos[key] = rp
		}
		if old, ok := rp.tags[tag]; ok && old.Digest != desc.Digest {
			return fmt.Errorf("%s is given twice, as %s and %s", ref, old.Digest, desc.Digest)
		}
		rp.tags[tag] = desc
		if err := rp.walk(lp, img.Layout, desc); err != nil {
			return fmt.Errorf("%s in %s: %w", ref, img.Layout, err)
		}
	}
	return nil
}

// walk records desc's manifest and, recursively, every manifest and blob it refers to.
func (rp *repo) walk(lp layout.Path, dir string, desc v1.Descriptor) error {
	rp.manifests[desc.Digest] = desc
	rp.layoutOf[desc.Digest] = dir
	raw, err := lp.Bytes(desc.Digest)
	if err != nil {
		return err
	}
	switch {
	case desc.MediaType.IsIndex():
		m, err := v1.ParseIndexManifest(bytes.NewReader(raw))
		if err != nil {
			return err
		}
		for _, d := range m.Manifests {
			if err := rp.walk(lp, dir, d); err != nil {
				return err
			}
		}
	case desc.MediaType.IsImage():
		m, err := v1.ParseManifest(bytes.NewReader(raw))
		if err != nil {
			return err
		}
		for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			if _, err := os.Stat(blobPath(dir, d.Digest)); err != nil {
				return fmt.Errorf("blob %s: %w", d.Digest, err)
			}
			rp.blobs[d.Digest] = dir
		}
	default:
		return fmt.Errorf("manifest %s has media type %q, neither an index nor an image", desc.Digest, desc.MediaType)
	}
	return nil
}

func blobPath(dir string, h v1.Hash) string {
	return filepath.Join(dir, "blobs", h.Algorithm, h.Hex)
}

// parseRef splits host/path:tag, spelling Docker Hub docker.io and its official images
// library/<name>, as containerd's mirror requests do.
func parseRef(ref string) (host, path, tag string, err error) {
	i := strings.LastIndex(ref, ":")
	if i < 0 || strings.Contains(ref[i:], "/") || strings.Contains(ref, "@") {
		return "", "", "", fmt.Errorf("reference %q: want host/path:tag", ref)
	}
	name, tag := ref[:i], ref[i+1:]
	host, path, ok := strings.Cut(name, "/")
	if !ok || !strings.ContainsAny(host, ".:") && host != "localhost" {
		return "", "", "", fmt.Errorf("reference %q: want a registry host first (docker.io/%s)", ref, name)
	}
	if !tagRe.MatchString(tag) || !pathRe.MatchString(path) {
		return "", "", "", fmt.Errorf("reference %q: invalid repository or tag", ref)
	}
	host, path = normalize(host, path)
	return host, path, tag, nil
}

func normalize(host, path string) (string, string) {
	if host == "index.docker.io" || host == "registry-1.docker.io" {
		host = "docker.io"
	}
	if host == "docker.io" && !strings.Contains(path, "/") {
		path = "library/" + path
	}
	return host, path
}

var (
	tagRe  = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	pathRe = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$`)
)

// Repositories lists the served repositories (host/path), sorted.
func (r *Registry) Repositories() []string {
	var names []string
	for n := range r.repos {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Hosts lists the upstream registries of the served references (docker.io,
// registry.k8s.io, ...), sorted: the hosts a containerd should mirror to this registry.
func (r *Registry) Hosts() []string {
	var hosts []string
	for n := range r.repos {
		h, _, _ := strings.Cut(n, "/")
		if !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	slices.Sort(hosts)
	return hosts
}

// Serve serves on l until ctx ends, then closes l and the connections.
func (r *Registry) Serve(ctx context.Context, l net.Listener) error {
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		err := srv.Close()
		<-errc
		return err
	}
}

// ServeHTTP implements the read side of the OCI distribution API.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		writeError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "this registry is read-only")
		return
	}
	p := req.URL.Path
	if p == "/v2/" || p == "/v2" {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("{}"))
		return
	}
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "not a registry API path")
		return
	}
	for _, kind := range []string{"/manifests/", "/blobs/", "/tags/"} {
		i := strings.LastIndex(rest, kind)
		if i <= 0 {
			continue
		}
		name, ref := rest[:i], rest[i+len(kind):]
		rp := r.lookup(req.URL.Query().Get("ns"), name)
		if rp == nil {
			writeError(w, http.StatusNotFound, "NAME_UNKNOWN", "repository "+name+" is not served here")
			return
		}
		switch kind {
		case "/manifests/":
			r.manifest(w, req, rp, ref)
		case "/blobs/":
			r.blob(w, req, rp, ref)
		default:
			if ref != "list" {
				writeError(w, http.StatusNotFound, "NOT_FOUND", "not a registry API path")
				return
			}
			tags := make([]string, 0, len(rp.tags))
			for t := range rp.tags {
				tags = append(tags, t)
			}
			slices.Sort(tags)
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"name": name, "tags": tags})
			return
		}
		return
	}
	writeError(w, http.StatusNotFound, "NOT_FOUND", "not a registry API path")
}

// lookup finds the repository for a request: host/name with ns, or the one repository
// whose path is name.
func (r *Registry) lookup(ns, name string) *repo {
	if ns != "" {
		host, path := normalize(ns, name)
		return r.repos[host+"/"+path]
	}
	var found *repo
	for key, rp := range r.repos {
		_, path, _ := strings.Cut(key, "/")
		if path == name || strings.TrimPrefix(path, "library/") == name {
			if found != nil {
				return nil // ambiguous without ns
			}
			found = rp
		}
	}
	return found
}

func (r *Registry) manifest(w http.ResponseWriter, req *http.Request, rp *repo, ref string) {
	desc, ok := rp.tags[ref]
	if !ok {
		h, err := v1.NewHash(ref)
		if err != nil {
			writeError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "no tag "+ref+" in "+rp.name)
			return
		}
		if desc, ok = rp.manifests[h]; !ok {
			writeError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "no manifest "+ref+" in "+rp.name)
			return
		}
	}
	serveFile(w, req, blobPath(rp.layoutOf[desc.Digest], desc.Digest), string(desc.MediaType), desc.Digest)
}

func (r *Registry) blob(w http.ResponseWriter, req *http.Request, rp *repo, ref string) {
	h, err := v1.NewHash(ref)
	if err != nil {
		writeError(w, http.StatusBadRequest, "DIGEST_INVALID", err.Error())
		return
	}
	dir, ok := rp.blobs[h]
	if !ok {
		if d, isManifest := rp.manifests[h]; isManifest {
			serveFile(w, req, blobPath(rp.layoutOf[h], h), string(d.MediaType), h)
			return
		}
		writeError(w, http.StatusNotFound, "BLOB_UNKNOWN", "no blob "+ref+" in "+rp.name)
		return
	}
	serveFile(w, req, blobPath(dir, h), "application/octet-stream", h)
}

// serveFile serves a blob or manifest file with its digest, media type and length (and
// ranges, which http.ServeContent handles).
func serveFile(w http.ResponseWriter, req *http.Request, path, mediaType string, h v1.Hash) {
	f, err := os.Open(path)
	if err != nil {
		writeError(w, http.StatusNotFound, "BLOB_UNKNOWN", err.Error())
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", mediaType)
	w.Header().Set("Docker-Content-Digest", h.String())
	w.Header().Set("Etag", `"`+h.String()+`"`)
	http.ServeContent(w, req, "", time.Time{}, f)
}

// writeError writes the distribution API's error body.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}
