package kustomize

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// writeJournal puts the journal in place in one rename, after the staged files and the
// journal itself are on disk.
func writeJournal(dir, stage string, plan WriteResult) error {
	var b strings.Builder
	b.WriteString("stage " + stage + "\n")
	for _, p := range plan.Written {
		b.WriteString("write " + p + "\n")
	}
	for _, p := range plan.Removed {
		b.WriteString("remove " + p + "\n")
	}
	if err := syncTree(filepath.Join(dir, stage)); err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	tmp := filepath.Join(dir, journalFile+".tmp")
	_ = os.Remove(tmp) // a leftover, or a link planted to redirect the write
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("write journal: %w", err)
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return fmt.Errorf("write journal: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write journal: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write journal: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, journalFile)); err != nil {
		return fmt.Errorf("write journal: %w", err)
	}
	return syncDir(dir)
}

// Recover finishes an update a crash interrupted after its commit point, and throws
// away the staged files of one interrupted before it. Write calls it first; it is safe
// to call at any time.
func Recover(dir string) error {
	data, err := os.ReadFile(filepath.Join(dir, journalFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return removeStages(dir)
	case err != nil:
		return fmt.Errorf("read render journal: %w", err)
	}
	var stage string
	var writes, removes []string
	for _, line := range strings.Split(string(data), "\n") {
		op, p, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		switch op {
		case "stage":
			stage = p
		case "write":
			writes = append(writes, p)
		case "remove":
			removes = append(removes, p)
		}
	}
	if !strings.HasPrefix(stage, stagePrefix) || strings.ContainsAny(stage, `/\`) {
		return fmt.Errorf("render journal %s names no staging directory; remove it and render again", filepath.Join(dir, journalFile))
	}
	d := dirMaker{}
	for _, p := range writes {
		if checkRelative(p) != nil || symlinkOn(dir, p) != "" {
			return fmt.Errorf("render journal %s: refusing %s; remove the journal and render again", filepath.Join(dir, journalFile), p)
		}
		src := filepath.Join(dir, stage, filepath.FromSlash(p))
		if _, err := os.Lstat(src); errors.Is(err, fs.ErrNotExist) {
			continue // moved before the crash
		}
		dst := filepath.Join(dir, filepath.FromSlash(p))
		if err := d.mkdir(filepath.Dir(dst)); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
		if err := os.Rename(src, dst); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
	}
	for _, p := range removes {
		if checkRelative(p) != nil || symlinkOn(dir, p) != "" {
			continue
		}
		dst := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.Remove(dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove stale %s: %w", p, err)
		}
		removeEmptyParents(dir, filepath.Dir(dst))
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(dir, journalFile)); err != nil {
		return fmt.Errorf("remove render journal: %w", err)
	}
	return removeStages(dir)
}

// removeStages removes staging directories and a half-written journal left by a crash.
func removeStages(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read output directory: %w", err)
	}
	for _, e := range entries {
		n := e.Name()
		if n == journalFile+".tmp" || (e.IsDir() && strings.HasPrefix(n, stagePrefix) && e.Type()&fs.ModeSymlink == 0) {
			if err := os.RemoveAll(filepath.Join(dir, n)); err != nil {
				return fmt.Errorf("remove leftover %s: %w", n, err)
			}
		}
	}
	return nil
}

// syncTree flushes every file and directory under root to disk, so that a journal
// naming them never outlives them in a power loss.
func syncTree(root string) error {
	return filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Sync()
	})
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
