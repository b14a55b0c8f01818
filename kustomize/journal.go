package kustomize

// The render journal makes an update of an existing output directory atomic. It is a
// text file, .mcnet-render-journal in the output directory, one operation a line:
//
//	stage .mcnet-render-123456   the staging directory holding the new files
//	write clusters/east/kustomization.yaml   move this file from the stage into place
//	remove clusters/old/kustomization.yaml   delete this file of the previous render
//
// The journal appears in one rename once everything it names is on disk, so its
// presence is the commit point: Recover replays it (each step can be repeated), and
// its absence means the old tree is whole and any stage is garbage.

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
	// Paths are slash-separated and relative to dir; render's paths hold no
	// newline or leading space, so one line per operation needs no quoting.
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
	// Written under a temporary name and synced before the rename: a power loss
	// must never leave a journal whose contents are not on disk.
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
	// The commit point: from here on, the new tree is what dir will hold.
	if err := os.Rename(tmp, filepath.Join(dir, journalFile)); err != nil {
		return fmt.Errorf("write journal: %w", err)
	}
	// Syncing the directory makes the rename itself durable.
	return syncDir(dir)
}

// Recover finishes an update a crash interrupted after its commit point, and throws
// away the staged files of one interrupted before it. Write calls it first; it is safe
// to call at any time. Its errors name the journal and say how to get out (remove it
// and render again) when the journal is damaged or names a path outside dir.
func Recover(dir string) error {
	data, err := os.ReadFile(filepath.Join(dir, journalFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return removeStages(dir)
	case err != nil:
		return fmt.Errorf("read render journal: %w", err)
	}
	// Lines with no operation (the final empty one) and unknown operations
	// are skipped; what matters is checked below.
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
	// The journal is read from a directory anyone with write access could have
	// edited: the stage must be a direct child of dir with render's prefix, and
	// no path may leave dir or pass through a symbolic link.
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
	// A removal is only cleanup: a suspicious path is skipped rather than
	// refused, since leaving a stale file behind harms nothing.
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
	// The renames must be durable before the journal goes, or a power loss
	// could leave neither the journal nor the new files.
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
		// Only real directories with render's prefix are leftover stages; a
		// symbolic link of that name is not render's and stays.
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

// syncDir flushes dir itself, which makes the renames and removals in it durable.
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
