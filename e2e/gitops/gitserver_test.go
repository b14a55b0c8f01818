package gitops

import (
	"os"
	"path/filepath"
	"testing"
)

// TestGitServerRoundTrip pushes a commit over HTTP and clones it back.
func TestGitServerRoundTrip(t *testing.T) {
	ctx := t.Context()
	s, err := StartGitServer(filepath.Join(t.TempDir(), "git"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	url, err := s.CreateRepo(ctx, "fleet", "main")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	if err := os.WriteFile(filepath.Join(work, "a.yaml"), []byte("a: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rev, err := CommitAndPush(ctx, work, url, "main", "first")
	if err != nil {
		t.Fatal(err)
	}
	clone := filepath.Join(t.TempDir(), "clone")
	if err := Git(ctx, "", "clone", "--quiet", "--branch", "main", url, clone); err != nil {
		t.Fatal(err)
	}
	got, err := GitOutput(ctx, clone, "rev-parse", "HEAD")
	if err != nil {
		t.Fatal(err)
	}
	if got != rev {
		t.Errorf("clone is at %s, pushed %s", got, rev)
	}
	if b, err := os.ReadFile(filepath.Join(clone, "a.yaml")); err != nil || string(b) != "a: 1\n" {
		t.Errorf("a.yaml in the clone: %q, %v", b, err)
	}
}
