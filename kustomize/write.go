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

// WriteOptions change how Write treats what it finds in the output directory.
type WriteOptions struct {
	// Force overwrites files the render did not write (they are not in the index of the
	// previous render). Without it such a file stops the write and is named in the error.
	Force bool
}

// WriteResult says what a write changed, as slash-separated paths relative to the
// output directory, sorted.
type WriteResult struct {
	// Written are the files created or replaced.
	Written []string
	// Removed are the files of the previous render that the new one no longer has.
	Removed []string
}

// ErrNotOurs is returned (wrapped in a *ConflictError) when the tree would replace files
// the render did not write.
var ErrNotOurs = errors.New("files render did not write")

// ConflictError names every file a write refused to touch.
type ConflictError struct {
	// Files are the paths (relative to the output directory) and why each is refused.
	Files []string
}

// Error lists the refused files, one per line, and how to go on (--force).
func (e *ConflictError) Error() string {
	return fmt.Sprintf("refusing to overwrite %d file(s) kubectl mcnet render did not write (move them away, or pass --force to overwrite them):\n  %s\nnothing was written",
		len(e.Files), strings.Join(e.Files, "\n  "))
}

// Unwrap makes errors.Is(err, ErrNotOurs) true, which the CLI maps to exit code 2.
func (e *ConflictError) Unwrap() error { return ErrNotOurs }

// ErrSymlink is returned when a rendered path would be written or removed through a
// symbolic link: render never follows one, so it can never write outside the output.
var ErrSymlink = errors.New("symbolic link in a rendered path")

// journalFile names the list of renames and removals of an update in progress. Once it
// is in place the update is decided: whoever finds it (the next Write, or Recover)
// finishes it; without it, staged files are thrown away and the old tree stays.
const journalFile = ".mcnet-render-journal"

// stagePrefix starts the names of staging directories.
const stagePrefix = ".mcnet-render-"

// Write puts a rendered tree into dir with default options; see WriteTree.
func Write(dir string, t Tree) error {
	_, err := WriteTree(dir, t, WriteOptions{})
	return err
}

// WriteTree puts a rendered tree into dir, which may not exist yet or may be a Git
// working tree holding an earlier render and unrelated files. Files of the previous
// render that the new one no longer has are removed (a cluster taken out of the fleet
// loses its directory); files render never wrote are left alone, and are never
// overwritten unless o.Force is set. No rendered path is written through a symbolic link.
//
// A new dir is written whole under a temporary name and renamed into place. In an
// existing dir every changed file is first written under a staging directory; then a
// journal of the renames and removals is put in place in one rename, the update's
// commit point, and carried out. A crash before the commit point leaves the old tree
// (the next Write discards the staged files); a crash after it leaves a journal that the
// next Write, or Recover, carries out before anything else, giving the new tree.
func WriteTree(dir string, t Tree, o WriteOptions) (WriteResult, error) {
	// The index lists what this render wrote, so the next one knows what it
	// may remove or replace; it is written like any other file.
	t = withIndex(t)
	// Every path is checked before anything is touched: a bad one fails the whole
	// write instead of leaving half of it done.
	for _, p := range t.Paths() {
		if err := checkRelative(p); err != nil {
			return WriteResult{}, err
		}
	}
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := writeNew(dir, t); err != nil {
			return WriteResult{}, err
		}
		return WriteResult{Written: t.Paths()}, nil
	}
	// An interrupted earlier write is finished first, so the index read next
	// describes the tree actually on disk.
	if err := Recover(dir); err != nil {
		return WriteResult{}, err
	}
	old, err := readIndex(dir)
	if err != nil {
		return WriteResult{}, err
	}
	plan, err := planWrite(dir, t, old, o)
	if err != nil {
		return WriteResult{}, err
	}
	// Nothing changed: no stage, no journal, and file times stay as they were.
	if len(plan.Written) == 0 && len(plan.Removed) == 0 {
		return plan, nil
	}

	stage, err := os.MkdirTemp(dir, stagePrefix)
	if err != nil {
		return WriteResult{}, fmt.Errorf("create staging directory: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			os.RemoveAll(stage)
		}
	}()
	d := dirMaker{}
	for _, p := range plan.Written {
		if err := d.writeFile(filepath.Join(stage, filepath.FromSlash(p)), t[p]); err != nil {
			return WriteResult{}, fmt.Errorf("stage %s: %w", p, err)
		}
	}
	if err := writeJournal(dir, filepath.Base(stage), plan); err != nil {
		return WriteResult{}, err
	}
	// The journal is in place: the stage belongs to it now, and carrying it out
	// is Recover's job whether it happens here or after a crash.
	committed = true
	if err := Recover(dir); err != nil {
		return WriteResult{}, err
	}
	return plan, nil
}

// planWrite decides which files change, and refuses the write, naming every file, when
// it would replace a file render did not write or pass through a symbolic link.
func planWrite(dir string, t Tree, old []string, o WriteOptions) (WriteResult, error) {
	// The index is always render's to replace, even when no earlier index lists it.
	ours := map[string]bool{IndexFile: true}
	for _, p := range old {
		ours[p] = true
	}
	var plan WriteResult
	var conflicts, links []string
	for _, p := range t.Paths() {
		if l := symlinkOn(dir, p); l != "" {
			links = append(links, l)
			continue
		}
		dst := filepath.Join(dir, filepath.FromSlash(p))
		fi, err := os.Lstat(dst)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if blocker := fileOnPath(dir, p); blocker != "" {
				conflicts = append(conflicts, blocker+" (a file where render needs a directory for "+p+")")
				continue
			}
		case err != nil:
			return WriteResult{}, fmt.Errorf("read %s: %w", p, err)
		case fi.IsDir():
			conflicts = append(conflicts, p+" (a directory where render writes a file)")
			continue
		default:
			// Unchanged files keep their mtimes, so tools watching the tree see no change.
			if same, _ := sameContent(dst, t[p]); same {
				continue
			}
			if !ours[p] && !o.Force {
				conflicts = append(conflicts, p)
				continue
			}
		}
		plan.Written = append(plan.Written, p)
	}
	for _, p := range old {
		if _, keep := t[p]; keep || checkRelative(p) != nil {
			continue // never follow a tampered index outside dir
		}
		if l := symlinkOn(dir, p); l != "" {
			links = append(links, l)
			continue
		}
		// A file someone already deleted is nothing to remove, not an error.
		if _, err := os.Lstat(filepath.Join(dir, filepath.FromSlash(p))); err == nil {
			plan.Removed = append(plan.Removed, p)
		}
	}
	var errs []error
	if len(links) > 0 {
		sort.Strings(links)
		links = dedupe(links)
		errs = append(errs, fmt.Errorf("%w: render never writes through one (it could lead outside the output directory); replace with a directory or file:\n  %s", ErrSymlink, strings.Join(links, "\n  ")))
	}
	if len(conflicts) > 0 {
		errs = append(errs, &ConflictError{Files: conflicts})
	}
	if len(errs) > 0 {
		if len(links) > 0 && len(conflicts) == 0 {
			errs = append(errs, errors.New("nothing was written"))
		}
		return WriteResult{}, errors.Join(errs...)
	}
	return plan, nil
}

// symlinkOn returns "PATH -> TARGET" for the first symbolic link among p's existing
// components (p itself included), or "".
func symlinkOn(dir, p string) string {
	parts := strings.Split(p, "/")
	cur := dir
	for i, part := range parts {
		cur = filepath.Join(cur, part)
		fi, err := os.Lstat(cur)
		if err != nil {
			return "" // the rest does not exist yet
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(cur)
			return strings.Join(parts[:i+1], "/") + " -> " + target
		}
		if !fi.IsDir() {
			return ""
		}
	}
	return ""
}

// fileOnPath returns the first proper ancestor of p that exists and is not a directory.
func fileOnPath(dir, p string) string {
	parts := strings.Split(p, "/")
	cur := dir
	for i, part := range parts[:len(parts)-1] {
		cur = filepath.Join(cur, part)
		fi, err := os.Lstat(cur)
		if err != nil {
			return ""
		}
		if !fi.IsDir() {
			return strings.Join(parts[:i+1], "/")
		}
	}
	return ""
}

// dedupe drops adjacent duplicates from a sorted slice, in place.
func dedupe(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// writeNew renders into a sibling temporary directory and renames it into place, so the
// output appears whole or not at all.
func writeNew(dir string, t Tree) error {
	parent := filepath.Dir(filepath.Clean(dir))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("create output directory: %w", err)
	}
	stage, err := os.MkdirTemp(parent, stagePrefix)
	if err != nil {
		return fmt.Errorf("create staging directory: %w", err)
	}
	// After the rename below, stage no longer exists: this only cleans up a write
	// that failed on the way.
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

// mkdir creates d and its parents (0755) unless this dirMaker made it already.
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

// writeFile writes data to path (0644), creating its directory first.
func (m dirMaker) writeFile(path string, data []byte) error {
	if err := m.mkdir(filepath.Dir(path)); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// checkRelative refuses a path that would land outside the output directory: an
// absolute one, or one that climbs out with "..". Rendered paths never do; the check
// is for paths read back from the index or the journal, which anyone may edit.
func checkRelative(p string) error {
	if filepath.IsAbs(p) || strings.HasPrefix(filepath.Clean(p), "..") {
		return fmt.Errorf("refusing to write outside the output directory: %s", p)
	}
	return nil
}

// sameContent says whether the file at path holds exactly want, with an error when
// it cannot be read (planWrite then treats the file as changed).
func sameContent(path string, want []byte) (bool, error) {
	got, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	return bytes.Equal(got, want), nil
}

// removeEmptyParents removes dir and its parents up to, not including, root, while
// they are empty: a cluster taken out of the fleet leaves no empty directories.
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

// readIndex returns the sorted paths the previous render listed in its index, or
// nil when dir holds no index (a first render into an existing directory). An index
// that is a symbolic link or a special file is refused with ErrSymlink, since
// following it would let anyone redirect what render removes.
func readIndex(dir string) ([]string, error) {
	p := filepath.Join(dir, IndexFile)
	if fi, err := os.Lstat(p); err == nil && !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file; remove it and render again", ErrSymlink, IndexFile)
	}
	f, err := os.Open(p)
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
