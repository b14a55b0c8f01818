package render_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/mcnet-io/mcnet/internal/cli"
)

func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = cli.Run(context.Background(), genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, args)
	return code, out.String(), errOut.String()
}

const example = "../../../examples/fleet.yaml"

// snapshot reads every file under dir (but .git) into a map.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == ".git" {
				return filepath.SkipDir
			}
			return nil
		}
		data, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		m[rel] = string(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRenderBadInputChangesNothing(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "repo")
	if code, _, stderr := run(t, "render", "-f", example, "--out", out); code != 0 {
		t.Fatalf("first render: exit %d: %s", code, stderr)
	}
	before := snapshot(t, out)

	good, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.NewReplacer(
		"name: west", "name: West",
		"[10.20.0.0/16, fd00:20::/56]", "[10.10.0.0/16]",
		"cable: vxlan", "cable: gre",
	).Replace(string(good))
	badFile := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(badFile, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := run(t, "render", "-f", badFile, "--out", out)
	if code != 2 {
		t.Errorf("exit code %d, want 2", code)
	}
	for _, want := range []string{"spec.clusters[West].name", "spec.clusters[east].cable", "overlaps", "nothing was written"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if diff := cmp.Diff(before, snapshot(t, out)); diff != "" {
		t.Errorf("output changed after bad input (-before +after):\n%s", diff)
	}
}

func TestRenderUsageErrors(t *testing.T) {
	tests := map[string][]string{
		"missing fleet file": {"render", "--out", t.TempDir()},
		"fleet not found":    {"render", "-f", "does-not-exist.yaml", "--out", t.TempDir()},
		"unknown flag":       {"render", "--bogus"},
		"unknown command":    {"rendr"},
	}
	for name, args := range tests {
		t.Run(name, func(t *testing.T) {
			if code, _, stderr := run(t, args...); code != 2 || stderr == "" {
				t.Errorf("exit %d, stderr %q; want 2 and a message", code, stderr)
			}
		})
	}
}

func TestRenderCommitIsReproducible(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatal("git is required")
	}
	out := filepath.Join(t.TempDir(), "fleet-repo")
	code, stdout, stderr := run(t, "render", "-f", example, "--out", out, "--commit")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "committed") {
		t.Errorf("no commit reported: %s", stdout)
	}
	first := snapshot(t, out)
	code, stdout, _ = run(t, "render", "-f", example, "--out", out, "--commit")
	if code != 0 || !strings.Contains(stdout, "nothing to commit") {
		t.Errorf("second render: exit %d, %q; want a no-op", code, stdout)
	}
	if diff := cmp.Diff(first, snapshot(t, out)); diff != "" {
		t.Errorf("second render changed files:\n%s", diff)
	}
	status, err := exec.Command("git", "-C", out, "status", "--porcelain").Output()
	if err != nil || len(status) != 0 {
		t.Errorf("working tree not clean after commit: %q %v", status, err)
	}
}

func TestVersion(t *testing.T) {
	code, stdout, _ := run(t, "version", "-o", "json")
	if code != 0 || !strings.Contains(stdout, `"kind": "Version"`) || !strings.Contains(stdout, `"goVersion"`) {
		t.Errorf("version -o json: exit %d, %s", code, stdout)
	}
	if code, _, _ := run(t, "version", "-o", "xml"); code != 2 {
		t.Errorf("version -o xml: exit %d, want 2", code)
	}
}
