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

func gitOut(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestRenderCommitsOnlyRenderedPaths renders with --commit into a repository holding the
// user's staged and unstaged work: the commit holds the rendered files only, and the
// user's work is where it was.
func TestRenderCommitsOnlyRenderedPaths(t *testing.T) {
	repo := t.TempDir()
	gitOut(t, repo, "init", "-q", "-b", "main")
	gitOut(t, repo, "remote", "add", "origin", "https://alice:s3cr3t-token@git.example.com/platform/fleet.git")
	for p, s := range map[string]string{"staged.txt": "staged\n", "untracked.txt": "untracked\n"} {
		if err := os.WriteFile(filepath.Join(repo, p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gitOut(t, repo, "add", "staged.txt")
	good, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	// Without spec.gitOps.repoURL the origin remote is the Git URL.
	fleetFile := filepath.Join(t.TempDir(), "fleet.yaml")
	noURL := strings.Replace(string(good), "    repoURL: https://git.example.com/platform/fleet.git\n", "", 1)
	if err := os.WriteFile(fleetFile, []byte(noURL), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(repo, "deploy")
	if code, _, stderr := run(t, "render", "-f", fleetFile, "--out", out, "--commit"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	files := strings.Split(gitOut(t, repo, "ls-tree", "-r", "--name-only", "HEAD"), "\n")
	for _, f := range files {
		if !strings.HasPrefix(f, "deploy/") {
			t.Errorf("commit holds %s, which render did not write", f)
		}
	}
	if status := gitOut(t, repo, "status", "--porcelain"); status != "A  staged.txt\n?? untracked.txt" && status != "A  staged.txt\n?? untracked.txt\n" {
		t.Errorf("git status after the commit:\n%s\nwant the user's staged and untracked files untouched", status)
	}
	// No manifest carries the credentials of the origin URL; Argo CD points at it without them.
	var sawURL bool
	for p, s := range snapshot(t, out) {
		if strings.Contains(s, "s3cr3t-token") || strings.Contains(s, "alice") {
			t.Errorf("%s carries the origin URL's credentials", p)
		}
		sawURL = sawURL || strings.Contains(s, "https://git.example.com/platform/fleet.git")
	}
	if !sawURL {
		t.Error("no manifest points at the origin URL (without its credentials)")
	}

	// A removed cluster's files are removed in the next commit; the user's work still is
	// not committed.
	west := strings.Index(noURL, "  - name: west")
	if err := os.WriteFile(fleetFile, []byte(noURL[:west]), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := run(t, "render", "-f", fleetFile, "--out", out, "--commit"); code != 0 {
		t.Fatalf("re-render: exit %d: %s", code, stderr)
	}
	if tree := gitOut(t, repo, "ls-tree", "-r", "--name-only", "HEAD"); strings.Contains(tree, "west") {
		t.Errorf("west's files are still committed after it left the fleet:\n%s", tree)
	}
	if got := gitOut(t, repo, "log", "--format=%s", "-n", "5"); strings.Count(got, "\n") != 1 {
		t.Errorf("commits after two renders:\n%s", got)
	}
	if strings.Contains(gitOut(t, repo, "ls-tree", "-r", "--name-only", "HEAD"), "staged.txt") {
		t.Error("the second commit took the user's file")
	}
}

// TestRenderRefusesUserFiles renders over a file of the user's at a rendered path.
func TestRenderRefusesUserFiles(t *testing.T) {
	out := t.TempDir()
	if err := os.WriteFile(filepath.Join(out, "README.md"), []byte("mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := run(t, "render", "-f", example, "--out", out)
	if code != 2 || !strings.Contains(stderr, "README.md") || !strings.Contains(stderr, "--force") {
		t.Fatalf("exit %d, stderr %q; want 2 naming README.md and --force", code, stderr)
	}
	if diff := cmp.Diff(map[string]string{"README.md": "mine\n"}, snapshot(t, out)); diff != "" {
		t.Errorf("refused render changed the output (-want +got):\n%s", diff)
	}
	if code, _, stderr := run(t, "render", "-f", example, "--out", out, "--force"); code != 0 {
		t.Fatalf("--force: exit %d: %s", code, stderr)
	}
	if s := snapshot(t, out)["README.md"]; s == "mine\n" {
		t.Error("--force left the user's README.md")
	}
}

// TestRenderRefusesCredentialsInRepoURL gives the URL with a token on the command line.
func TestRenderRefusesCredentialsInRepoURL(t *testing.T) {
	out := filepath.Join(t.TempDir(), "repo")
	code, _, stderr := run(t, "render", "-f", example, "--out", out, "--repo-url", "https://x-access-token:ghp_abc@git.example.com/fleet.git")
	if code != 2 || !strings.Contains(stderr, "--repo-url") || strings.Contains(stderr, "ghp_abc") {
		t.Fatalf("exit %d, stderr %q; want 2, naming --repo-url, not echoing the token", code, stderr)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Error("the refused render wrote the output")
	}
}
