package packaging

import (
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// TestImageOnBase builds the image on a base read from an OCI layout (as a release does
// with a base that has iptables): each platform keeps the base's layers under mcnet's own,
// and mcnet's labels and empty entrypoint replace the base's.
func TestImageOnBase(t *testing.T) {
	created := time.Unix(1700000000, 0)
	baseFiles := map[Platform][]File{}
	ours := map[Platform][]File{}
	for _, p := range ImagePlatforms {
		baseFiles[p] = []File{{Name: "usr/", Mode: 0o755}, {Name: "usr/sbin/", Mode: 0o755}, {Name: "usr/sbin/iptables", Mode: 0o755, Data: []byte(p.String())}}
		ours[p] = []File{{Name: "mcnet-gateway", Mode: 0o755, Data: []byte("gw " + p.String())}}
	}
	base, err := BuildImage(baseFiles, ImageMeta{Version: "base", Created: created})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := layout.Write(dir, base); err != nil {
		t.Fatal(err)
	}
	fromDisk, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := BuildImage(ours, ImageMeta{Version: "v1.2.3", Created: created, Base: fromDisk})
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != len(ImagePlatforms) {
		t.Fatalf("%d platform images, want %d", len(m.Manifests), len(ImagePlatforms))
	}
	for _, d := range m.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		if len(layers) != 2 {
			t.Errorf("%s: %d layers, want the base's and mcnet's", d.Platform, len(layers))
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.Config.Labels["org.opencontainers.image.version"]; got != "v1.2.3" {
			t.Errorf("%s: version label %q", d.Platform, got)
		}
		if cfg.Architecture != d.Platform.Architecture || len(cfg.Config.Entrypoint) != 0 {
			t.Errorf("%s: arch %s entrypoint %v", d.Platform, cfg.Architecture, cfg.Config.Entrypoint)
		}
	}
}
