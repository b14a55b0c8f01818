package registry

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// testLayout writes a layout holding a one-platform index under each of refs, and a
// second image under other.
func testLayout(t *testing.T, refs []string, other string) (dir string, idx, second v1.ImageIndex) {
	t.Helper()
	dir = t.TempDir()
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	mk := func() v1.ImageIndex {
		img, err := random.Image(1024, 2)
		if err != nil {
			t.Fatal(err)
		}
		img = mutate.MediaType(img, types.OCIManifestSchema1)
		return mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), mutate.IndexAddendum{
			Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}},
		})
	}
	idx, second = mk(), mk()
	add := func(i v1.ImageIndex, ref string) {
		if err := lp.AppendIndex(i, layout.WithAnnotations(map[string]string{refAnnotation: ref})); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range refs {
		add(idx, r)
	}
	add(second, other)
	return dir, idx, second
}

// TestPull pulls images from the registry with go-containerregistry's client, as a
// registry client of its own does, by tag and by digest, and checks every blob.
func TestPull(t *testing.T) {
	refs := []string{"docker.io/alpine/socat:1.7.4.4", "docker.io/alpine/socat:latest", "registry.k8s.io/pause:3.6"}
	dir, want, second := testLayout(t, refs, "ghcr.io/mcnet-io/nettools:dev")
	reg, err := New(Image{Layout: dir, Refs: refs}, Image{Layout: dir, Refs: []string{"ghcr.io/mcnet-io/nettools:dev"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(reg.Hosts(), " "), "docker.io ghcr.io registry.k8s.io"; got != want {
		t.Errorf("Hosts() = %s, want %s", got, want)
	}
	if got, want := strings.Join(reg.Repositories(), " "), "docker.io/alpine/socat ghcr.io/mcnet-io/nettools registry.k8s.io/pause"; got != want {
		t.Errorf("Repositories() = %s, want %s", got, want)
	}
	srv := httptest.NewServer(reg)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	wantDigest, _ := want.Digest()
	for _, ref := range []string{host + "/alpine/socat:1.7.4.4", host + "/alpine/socat:latest", host + "/pause:3.6", host + "/alpine/socat@" + wantDigest.String()} {
		t.Run(ref[len(host):], func(t *testing.T) {
			r, err := name.ParseReference(ref, name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			got, err := remote.Index(r, remote.WithContext(t.Context()))
			if err != nil {
				t.Fatalf("pull %s: %v", ref, err)
			}
			if d, _ := got.Digest(); d != wantDigest {
				t.Errorf("index digest %s, want %s", d, wantDigest)
			}
			m, err := got.IndexManifest()
			if err != nil || len(m.Manifests) != 1 {
				t.Fatalf("index: %v, %v", m, err)
			}
			img, err := got.Image(m.Manifests[0].Digest)
			if err != nil {
				t.Fatal(err)
			}
			layers, err := img.Layers()
			if err != nil || len(layers) != 2 {
				t.Fatalf("layers %d, %v", len(layers), err)
			}
			for _, l := range layers {
				rc, err := l.Compressed() // verifies the digest while reading
				if err != nil {
					t.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, rc); err != nil {
					t.Errorf("layer: %v", err)
				}
				rc.Close()
			}
			if _, err := img.ConfigFile(); err != nil {
				t.Errorf("config: %v", err)
			}
		})
	}

	secondDigest, _ := second.Digest()
	r, _ := name.ParseReference(host+"/mcnet-io/nettools:dev", name.Insecure)
	if got, err := remote.Index(r); err != nil {
		t.Errorf("pull the second image: %v", err)
	} else if d, _ := got.Digest(); d != secondDigest {
		t.Errorf("second image digest %s, want %s", d, secondDigest)
	}
	// The first image's manifest is not in the second's repository.
	r, _ = name.ParseReference(host+"/mcnet-io/nettools@"+wantDigest.String(), name.Insecure)
	if _, err := remote.Index(r); err == nil {
		t.Error("a manifest of another repository was served")
	}
}

// TestHTTP checks the API's responses the way containerd's mirror requests make them.
func TestHTTP(t *testing.T) {
	dir, idx, _ := testLayout(t, []string{"docker.io/library/alpine:3", "docker.io/nicolaka/netshoot:v0.15", "quay.io/nicolaka/netshoot:v0.15"}, "registry.k8s.io/pause:3.6")
	reg, err := FromLayouts(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(reg)
	defer srv.Close()
	d, _ := idx.Digest()
	raw, _ := idx.RawManifest()
	im, _ := idx.IndexManifest()
	img, _ := idx.Image(im.Manifests[0].Digest)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	lsize, _ := layers[0].Size()

	for _, tc := range []struct {
		method, path string
		status       int
		contentType  string
		digest       string
		length       int64
		body         string
	}{
		{"GET", "/v2/", 200, "application/json", "", -1, "{}"},
		{"HEAD", "/v2/nicolaka/netshoot/manifests/v0.15?ns=docker.io", 200, string(types.OCIImageIndex), d.String(), int64(len(raw)), ""},
		{"GET", "/v2/nicolaka/netshoot/manifests/v0.15?ns=docker.io", 200, string(types.OCIImageIndex), d.String(), int64(len(raw)), string(raw)},
		{"GET", "/v2/nicolaka/netshoot/manifests/" + d.String() + "?ns=quay.io", 200, string(types.OCIImageIndex), d.String(), int64(len(raw)), string(raw)},
		{"GET", "/v2/library/alpine/manifests/3?ns=docker.io", 200, string(types.OCIImageIndex), d.String(), int64(len(raw)), ""},
		{"GET", "/v2/alpine/manifests/3", 200, string(types.OCIImageIndex), d.String(), int64(len(raw)), ""},
		{"GET", "/v2/pause/manifests/3.6?ns=registry.k8s.io", 200, string(types.OCIImageIndex), "", -1, ""},
		{"HEAD", "/v2/nicolaka/netshoot/blobs/" + ld.String() + "?ns=docker.io", 200, "application/octet-stream", ld.String(), lsize, ""},
		// Ambiguous without ns: docker.io and quay.io both have nicolaka/netshoot.
		{"GET", "/v2/nicolaka/netshoot/manifests/v0.15", 404, "application/json", "", -1, "NAME_UNKNOWN"},
		{"GET", "/v2/nicolaka/netshoot/manifests/v9?ns=docker.io", 404, "application/json", "", -1, "MANIFEST_UNKNOWN"},
		{"GET", "/v2/nicolaka/netshoot/blobs/sha256:" + strings.Repeat("0", 64) + "?ns=docker.io", 404, "application/json", "", -1, "BLOB_UNKNOWN"},
		{"GET", "/v2/nicolaka/netshoot/blobs/nonsense?ns=docker.io", 400, "application/json", "", -1, "DIGEST_INVALID"},
		{"GET", "/v2/other/manifests/latest?ns=docker.io", 404, "application/json", "", -1, "NAME_UNKNOWN"},
		{"GET", "/v2/nicolaka/netshoot/tags/list?ns=docker.io", 200, "application/json", "", -1, `"tags":["v0.15"]`},
		{"PUT", "/v2/nicolaka/netshoot/manifests/v0.15?ns=docker.io", 405, "application/json", "", -1, "UNSUPPORTED"},
		{"POST", "/v2/nicolaka/netshoot/blobs/uploads/?ns=docker.io", 405, "application/json", "", -1, "UNSUPPORTED"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), tc.method, srv.URL+tc.path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d (%s)", resp.StatusCode, tc.status, body)
			}
			if got := resp.Header.Get("Content-Type"); got != tc.contentType {
				t.Errorf("Content-Type %q, want %q", got, tc.contentType)
			}
			if tc.digest != "" && resp.Header.Get("Docker-Content-Digest") != tc.digest {
				t.Errorf("Docker-Content-Digest %q, want %s", resp.Header.Get("Docker-Content-Digest"), tc.digest)
			}
			if tc.length >= 0 && resp.ContentLength != tc.length {
				t.Errorf("Content-Length %d, want %d", resp.ContentLength, tc.length)
			}
			if resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
				t.Error("no Docker-Distribution-API-Version header")
			}
			if tc.method == "GET" && tc.status == 200 && tc.digest != "" {
				sum := sha256.Sum256(body)
				if "sha256:"+hex.EncodeToString(sum[:]) != tc.digest {
					t.Errorf("body does not hash to %s", tc.digest)
				}
			}
			if tc.body != "" && !strings.Contains(string(body), tc.body) {
				t.Errorf("body %s, want it to contain %s", body, tc.body)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	dir, _, _ := testLayout(t, []string{"docker.io/alpine/socat:1.7.4.4"}, "docker.io/alpine/socat:other")
	for _, tc := range []struct {
		img  Image
		want string
	}{
		{Image{Layout: dir, Refs: []string{"docker.io/alpine/socat:missing"}}, "has no image named docker.io/alpine/socat:missing"},
		{Image{Layout: dir, Refs: []string{"alpine/socat:1.7.4.4"}}, "want a registry host first"},
		{Image{Layout: dir, Refs: []string{"docker.io/alpine/socat"}}, "want host/path:tag"},
		{Image{Layout: t.TempDir(), Refs: []string{"docker.io/alpine/socat:1"}}, "image layout"},
	} {
		if _, err := New(tc.img); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%v): %v, want an error containing %q", tc.img.Refs, err, tc.want)
		}
	}
}
