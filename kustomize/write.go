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
// A new dir is written whole under a temporary name and renamed into place. In an existing
// dir every changed file is first written under a temporary directory and then renamed
// over the old one, so a failure part-way leaves no half-written file.
func Write(dir string, t Tree) error {
	t = withIndex(t)
	for _, p := range t.Paths() {
		if err := checkRelative(p); err != nil {
			return err
		}
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return writeNew(dir, t)
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

	// Stage only what differs; unchanged files keep their mtimes, so tools watching the
	// tree see no change.
	var changed []string
	d := dirMaker{}
	for _, p := range t.Paths() {
		if same, _ := sameContent(filepath.Join(dir, filepath.FromSlash(p)), t[p]); same {
			continue
		}
		if err := d.writeFile(filepath.Join(stage, filepath.FromSlash(p)), t[p]); err != nil {
			return fmt.Errorf("stage %s: %w", p, err)
		}
		changed = append(changed, p)
	}
	for _, p := range changed {
		dst := filepath.Join(dir, filepath.FromSlash(p))
		if err := d.mkdir(filepath.Dir(dst)); err != nil {
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

// writeNew renders into a sibling temporary directory and renames it into place, so the
// output appears whole or not at all.
func writeNew(dir string, t Tree) error {
	parent := filepath.Dir(filepath.Clean(dir))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("create output directory: %w", err)
	}
	stage, err := os.MkdirTemp(parent, ".mcnet-render-")
	if err != nil {
		return fmt.Errorf("create staging directory: %w", err)
	}
	defer os.RemoveAll(stage)
	d := dirMaker{}
	for _, p := range t.Paths() {
		if err := d.writeFile(filepath.Join(stage, filepath.FromSlash(p)), t[p]); err != nil {
			return fmt.Errorf("stage %s: %w", p, err)
		}
	}
	if err := os.Chmod(stage, 0o755); err != nil { // MkdirTemp makes it 0700
		return fmt.Errorf("create output directory: %w", err)
	}
	if err := os.Rename(stage, dir); err != nil {
		return fmt.Errorf("create output directory: %w", err)
	}
	return nil
}

// dirMaker remembers directories it made: MkdirAll for every file is most of the cost of
// writing a large tree.
type dirMaker map[string]bool

func (m dirMaker) mkdir(d string) error {
	if m[d] {
		return nil
	}
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	m[d] = true
	return nil
}

func (m dirMaker) writeFile(path string, data []byte) error {
	if err := m.mkdir(filepath.Dir(path)); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
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
