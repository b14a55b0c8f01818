package kustomize

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Write puts a rendered tree into dir, which may not exist yet or may be a Git working
// tree holding an earlier render and unrelated files. Files of the previous render that
// the new one no longer has are removed (a cluster taken out of the fleet loses its
// directory); files render never wrote are left alone.
//
// Every new file is first written under a temporary directory inside dir and then renamed
// into place, so a failure part-way leaves no half-written file.
func Write(dir string, t Tree) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create output directory: %w", err)
	}
	old, err := readIndex(dir)
	if err != nil {
		return err
	}
	stage, err := os.MkdirTemp(dir, ".mcnet-render-")
	if err != nil {
		return fmt.Errorf("create staging directory: %w", err)
	}
	defer os.RemoveAll(stage)

	t = withIndex(t)
	paths := t.Paths()
	for _, p := range paths {
		if err := checkRelative(p); err != nil {
			return err
		}
		dst := filepath.Join(stage, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("stage %s: %w", p, err)
		}
		if err := os.WriteFile(dst, t[p], 0o644); err != nil {
			return fmt.Errorf("stage %s: %w", p, err)
		}
	}
	for _, p := range paths {
		dst := filepath.Join(dir, filepath.FromSlash(p))
		if same, _ := sameContent(dst, t[p]); same {
			continue // leave mtimes alone so tools watching the tree see no change
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
		if err := os.Rename(filepath.Join(stage, filepath.FromSlash(p)), dst); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
	}
	for _, p := range old {
		if _, keep := t[p]; keep {
			continue
		}
		if err := checkRelative(p); err != nil {
			continue // never follow a tampered index outside dir
		}
		dst := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.Remove(dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove stale %s: %w", p, err)
		}
		removeEmptyParents(dir, filepath.Dir(dst))
	}
	return nil
}

func checkRelative(p string) error {
	if filepath.IsAbs(p) || strings.HasPrefix(filepath.Clean(p), "..") {
		return fmt.Errorf("refusing to write outside the output directory: %s", p)
	}
	return nil
}

func sameContent(path string, want []byte) (bool, error) {
	got, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	return bytes.Equal(got, want), nil
}

func removeEmptyParents(root, dir string) {
	for dir != root && strings.HasPrefix(dir, root) {
		if err := os.Remove(dir); err != nil {
			return // not empty, or gone
		}
		dir = filepath.Dir(dir)
	}
}

// withIndex adds the index of rendered files to a copy of t.
func withIndex(t Tree) Tree {
	out := make(Tree, len(t)+1)
	var b strings.Builder
	b.WriteString("# Files written by kubectl mcnet render; the next render removes those it no longer writes.\n")
	for _, p := range t.Paths() {
		out[p] = t[p]
		b.WriteString(p)
		b.WriteByte('\n')
	}
	out[IndexFile] = []byte(b.String())
	return out
}

func readIndex(dir string) ([]string, error) {
	f, err := os.Open(filepath.Join(dir, IndexFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read render index: %w", err)
	}
	defer f.Close()
	var paths []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		paths = append(paths, line)
	}
	sort.Strings(paths)
	return paths, s.Err()
}
