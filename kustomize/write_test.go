package kustomize

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// TestWriteRefusesFilesItDidNotWrite renders into a directory holding a file of the
// user's at a rendered path: the write fails naming it, changes nothing, and with Force
// overwrites it.
func TestWriteRefusesFilesItDidNotWrite(t *testing.T) {
	dir := t.TempDir()
	tree, err := Render(loadFleet(t), testOptions)
	if err != nil {
		t.Fatal(err)
	}
	mine := map[string]string{"README.md": "my project\n", "clusters/east/kustomization.yaml": "# mine\n"}
	for p, s := range mine {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, err = WriteTree(dir, tree, WriteOptions{})
	var conflict *ConflictError
	if !errors.As(err, &conflict) || !errors.Is(err, ErrNotOurs) {
		t.Fatalf("error %v, want a ConflictError", err)
	}
	if diff := cmp.Diff([]string{"README.md", "clusters/east/kustomization.yaml"}, conflict.Files); diff != "" {
		t.Errorf("files named (-want +got):\n%s", diff)
	}
	for _, want := range []string{"README.md", "clusters/east/kustomization.yaml", "--force", "nothing was written"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	got := readTree(t, dir)
	if diff := cmp.Diff(mine, stringify(got)); diff != "" {
		t.Errorf("the refused write changed the directory (-want +got):\n%s", diff)
	}

	res, err := WriteTree(dir, tree, WriteOptions{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(stringify(withIndex(tree)), stringify(readTree(t, dir))); diff != "" {
		t.Errorf("forced write (-want +got):\n%s", diff)
	}
	if len(res.Written) != len(tree)+1 {
		t.Errorf("forced write reports %d files written, want %d", len(res.Written), len(tree)+1)
	}
	// Now they are render's files: the next render replaces them without Force.
	cs := loadFleet(t)
	cs.Spec.Image.Tag = "v9"
	next, err := Render(cs, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := WriteTree(dir, next, WriteOptions{}); err != nil {
		t.Fatalf("re-render over its own files: %v", err)
	}
}

// TestWriteNeverFollowsSymlinks points a rendered directory and the index at places
// outside the output: the write refuses, naming the links, and nothing outside changes.
func TestWriteNeverFollowsSymlinks(t *testing.T) {
	tree, err := Render(loadFleet(t), testOptions)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, link string
		wantErr    string
	}{
		{"directory", "clusters/east", "clusters/east -> "},
		{"file", "clusters/east/config.yaml", "clusters/east/config.yaml -> "},
		{"index", IndexFile, IndexFile + " is not a regular file"},
		{"stale file", "clusters/gone/kustomization.yaml", "clusters/gone/kustomization.yaml -> "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, outside := t.TempDir(), t.TempDir()
			if err := Write(dir, tree); err != nil {
				t.Fatal(err)
			}
			victim := filepath.Join(outside, "victim")
			if err := os.WriteFile(victim, []byte("keep\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			target := outside
			if !strings.HasSuffix(tc.link, "east") {
				target = victim
			}
			if tc.name == "stale file" {
				// The previous render's index names a file now linked outside.
				idx, _ := os.ReadFile(filepath.Join(dir, IndexFile))
				idx = append(idx, []byte(tc.link+"\n")...)
				if err := os.WriteFile(filepath.Join(dir, IndexFile), idx, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.MkdirAll(filepath.Join(dir, "clusters/gone"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			l := filepath.Join(dir, filepath.FromSlash(tc.link))
			if err := os.RemoveAll(l); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, l); err != nil {
				t.Fatal(err)
			}
			cs := loadFleet(t)
			cs.Spec.Image.Tag = "v9"
			next, err := Render(cs, testOptions)
			if err != nil {
				t.Fatal(err)
			}
			_, err = WriteTree(dir, next, WriteOptions{Force: true})
			if !strings.Contains(fmt.Sprint(err), tc.wantErr) {
				t.Fatalf("error %v, want one naming %q", err, tc.wantErr)
			}
			got := readTree(t, outside)
			if diff := cmp.Diff(map[string]string{"victim": "keep\n"}, stringify(got)); diff != "" {
				t.Errorf("outside the output (-want +got):\n%s", diff)
			}
		})
	}
}

// The crash test runs the test binary again as a writer that alternates between two
// trees until it is killed.
const crashEnv = "MCNET_WRITE_CRASH_DIR"

func crashTrees(t *testing.T) (a, b Tree) {
	t.Helper()
	a, err := Render(fleetOf(20), Options{Version: "v1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	b, err = Render(fleetOf(15), Options{Version: "v2.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

// TestWriteCrashWriter is the writer the crash test kills; it does nothing otherwise.
func TestWriteCrashWriter(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("run by TestWriteIsAtomicUnderKill")
	}
	a, b := crashTrees(t)
	fmt.Println("ready")
	for {
		for _, tr := range []Tree{a, b} {
			if _, err := WriteTree(dir, tr, WriteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestWriteIsAtomicUnderKill kills a writer process while it replaces one tree with
// the other, over and over: half the time at a random moment, half the time as soon as
// its journal appears, while its renames are under way. Every time the directory holds
// one whole tree (with the user's file beside it), or a journal that Recover carries out
// to one whole tree: never a mix.
func TestWriteIsAtomicUnderKill(t *testing.T) {
	a, b := crashTrees(t)
	dir := t.TempDir()
	userFile := "clusters/c001/mine.yaml"
	seed := func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := Write(dir, a); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, userFile), []byte("mine\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wantA, wantB := stringify(withIndex(a)), stringify(withIndex(b))
	whole := func(got Tree) string {
		delete(got, userFile)
		switch {
		case cmp.Equal(stringify(got), wantA):
			return "a"
		case cmp.Equal(stringify(got), wantB):
			return "b"
		}
		return ""
	}
	var clean, journaled int
	for trial := range 12 {
		seed()
		cmd := exec.Command(os.Args[0], "-test.run=^TestWriteCrashWriter$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line := make([]byte, 6)
		if _, err := io.ReadFull(stdout, line); err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("writer did not start: %v", err)
		}
		if trial%2 == 0 {
			time.Sleep(time.Duration(rand.IntN(30000)) * time.Microsecond)
		} else {
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
				if _, err := os.Lstat(filepath.Join(dir, journalFile)); err == nil {
					break
				}
			}
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()

		_, err = os.Stat(filepath.Join(dir, journalFile))
		inFlight := err == nil
		if inFlight {
			journaled++
			if err := Recover(dir); err != nil {
				t.Fatalf("trial %d: recover: %v", trial, err)
			}
		} else {
			clean++
		}
		got := readTree(t, dir)
		for p := range got {
			if strings.HasPrefix(p, stagePrefix) {
				delete(got, p) // staged files of a write killed before its commit point
			}
		}
		if got[userFile] == nil {
			t.Fatalf("trial %d: the user's file is gone", trial)
		}
		if whole(got) == "" {
			t.Fatalf("trial %d (journal found: %v): the directory holds neither tree whole; against the first (-want +got):\n%s", trial, inFlight, cmp.Diff(wantA, stringify(got)))
		}
		// The next write starts by clearing what the crash left.
		if _, err := WriteTree(dir, b, WriteOptions{}); err != nil {
			t.Fatalf("trial %d: write after the crash: %v", trial, err)
		}
	}
	t.Logf("kills outside the rename window: %d, inside it (journal recovered): %d", clean, journaled)
	if journaled == 0 || clean == 0 {
		t.Fatalf("kills never landed both inside (%d) and outside (%d) the rename window", journaled, clean)
	}
}
