package kustomize

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestWriteRemovesWhatTheFleetNoLongerHas renders three clusters, then two, over the same
// directory, with a file of the user's in it, and checks what is left.
func TestWriteRemovesWhatTheFleetNoLongerHas(t *testing.T) {
	dir := t.TempDir()
	cs := loadFleet(t)
	full, err := Render(cs, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(dir, full); err != nil {
		t.Fatal(err)
	}
	userFiles := map[string]string{
		"NOTES.md":                  "mine\n",
		"clusters/west/extra.yaml":  "kind: ConfigMap\n",
		"clusters/legacy/keep.yaml": "kind: ConfigMap\n",
	}
	for p, s := range userFiles {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	cs.Spec.Clusters = cs.Spec.Clusters[:2] // drop west
	smaller, err := Render(cs, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(dir, smaller); err != nil {
		t.Fatal(err)
	}
	got := readTree(t, dir)
	want := withIndex(smaller)
	for p, s := range userFiles {
		want[p] = []byte(s)
	}
	if diff := cmp.Diff(stringify(want), stringify(got)); diff != "" {
		t.Errorf("tree after re-render (-want +got):\n%s", diff)
	}
	for _, gone := range []string{"flux/west", "argocd/west.yaml", "broker/cluster-west.yaml", "clusters/west/config.yaml"} {
		if _, err := os.Stat(filepath.Join(dir, gone)); !os.IsNotExist(err) {
			t.Errorf("%s still exists after west left the fleet", gone)
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".mcnet-render-") {
			t.Errorf("staging directory %s left behind", e.Name())
		}
	}
}

// TestWriteTwiceChangesNothing checks that writing the same tree again touches no file.
func TestWriteTwiceChangesNothing(t *testing.T) {
	dir := t.TempDir()
	tree, err := Render(loadFleet(t), testOptions)
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(dir, tree); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "clusters", "east", "config.yaml")
	before, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(dir, tree); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if !before.ModTime().Equal(after.ModTime()) || !os.SameFile(before, after) {
		t.Error("an unchanged file was rewritten")
	}
}
