// Package output is how kubectl-mcnet reports look: tables for people, report kinds
// (runtime.Objects that cli-runtime's printers take) for scripts, colour and symbols only on a terminal without
// NO_COLOR, and a spinner on a terminal for anything slow.
package output

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"golang.org/x/term"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// APIVersion is the apiVersion of every report document. Reports are never stored in
// a cluster and have no CRD; they share mcnet's API group so scripts see one family.
const APIVersion = "mcnet.io/v1alpha1"

// TypeMeta heads every report document so scripts can check what they parse. It is
// Kubernetes' own, which makes a report half of a runtime.Object: with DeepCopyObject
// (see DeepCopyJSON) cli-runtime's printers take it.
type TypeMeta = metav1.TypeMeta

// Meta returns the TypeMeta of kind.
func Meta(kind string) TypeMeta { return TypeMeta{APIVersion: APIVersion, Kind: kind} }

// DeepCopyJSON copies a report through its JSON form, for DeepCopyObject. Reports are
// plain documents in which every field is serialised, so the round trip is a complete
// copy, and unlike generated deep-copy code it cannot fall behind when a field is added.
func DeepCopyJSON[T any](in *T) *T {
	if in == nil {
		return nil
	}
	data, err := json.Marshal(in)
	if err != nil {
		panic(fmt.Sprintf("copy %T: %v", in, err)) // only for a type that is not a plain document
	}
	out := new(T)
	if err := json.Unmarshal(data, out); err != nil {
		panic(fmt.Sprintf("copy %T: %v", in, err))
	}
	return out
}

// ClusterSubjects returns clusters as objects of kind Cluster, in order and without
// repeats: what `-o name` prints for a report about clusters.
func ClusterSubjects(names ...string) []runtime.Object {
	var out []runtime.Object
	seen := map[string]bool{}
	for _, n := range names {
		if n == "" || seen[n] {
			continue
		}
		seen[n] = true
		out = append(out, &metav1.PartialObjectMetadata{
			TypeMeta:   metav1.TypeMeta{APIVersion: APIVersion, Kind: "Cluster"},
			ObjectMeta: metav1.ObjectMeta{Name: n},
		})
	}
	return out
}

// NewTable returns a tab writer for aligned columns; Flush it.
func NewTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

// IsTerminal says whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// NoColor says whether the NO_COLOR convention (https://no-color.org) asks for plain
// output.
func NoColor(getenv func(string) string) bool { return getenv("NO_COLOR") != "" }

// Style decorates text for a terminal, or leaves it plain.
type Style struct {
	// Fancy enables colour and Unicode symbols.
	Fancy bool
}

// StyleFor returns the style for w: fancy on a terminal unless NO_COLOR is set.
func StyleFor(w io.Writer, getenv func(string) string) Style {
	return Style{Fancy: IsTerminal(w) && !NoColor(getenv)}
}

const (
	reset  = "\x1b[0m"
	red    = "\x1b[31m"
	green  = "\x1b[32m"
	yellow = "\x1b[33m"
	bold   = "\x1b[1m"
	faint  = "\x1b[2m"
)

func (s Style) paint(code, text string) string {
	if !s.Fancy {
		return text
	}
	return code + text + reset
}

// Bold is for headers.
func (s Style) Bold(t string) string { return s.paint(bold, t) }

// Faint is for hints.
func (s Style) Faint(t string) string { return s.paint(faint, t) }

// Good, Bad and Warn colour a word by what it means.
func (s Style) Good(t string) string { return s.paint(green, t) }

// Bad colours a word red.
func (s Style) Bad(t string) string { return s.paint(red, t) }

// Warn colours a word yellow.
func (s Style) Warn(t string) string { return s.paint(yellow, t) }

// Mark returns the symbol for a check result: ok, warn, fail or skip.
func (s Style) Mark(result string) string {
	if !s.Fancy {
		switch result {
		case "ok":
			return "[ok]  "
		case "warn":
			return "[warn]"
		case "fail":
			return "[FAIL]"
		default:
			return "[skip]"
		}
	}
	switch result {
	case "ok":
		return s.Good("√")
	case "warn":
		return s.Warn("‼")
	case "fail":
		return s.Bad("×")
	default:
		return s.Faint("-")
	}
}

// Header is a block title: "── cluster east (context kind-east) ──".
func (s Style) Header(t string) string {
	if !s.Fancy {
		return "=== " + t + " ==="
	}
	return s.Bold("── " + t + " " + strings.Repeat("─", max(3, 60-len(t))))
}

// Spinner shows progress on a terminal after a delay, so quick commands print
// nothing. Stop it before printing results.
type Spinner struct {
	w    io.Writer
	stop chan struct{}
	done sync.WaitGroup
	mu   sync.Mutex
	msg  string
}

// StartSpinner starts a spinner on w (stderr) when w is a terminal and NO_COLOR is not
// set; otherwise the spinner does nothing.
func StartSpinner(w io.Writer, getenv func(string) string, msg string) *Spinner {
	s := &Spinner{w: w, msg: msg, stop: make(chan struct{})}
	if !IsTerminal(w) || NoColor(getenv) {
		close(s.stop)
		return s
	}
	s.done.Go(s.run)
	return s
}

// Set changes the message.
func (s *Spinner) Set(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msg = msg
}

func (s *Spinner) run() {
	frames := []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}
	select {
	case <-s.stop:
		return
	case <-time.After(time.Second):
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for i := 0; ; i++ {
		s.mu.Lock()
		fmt.Fprintf(s.w, "\r\x1b[K%s %s", frames[i%len(frames)], s.msg)
		s.mu.Unlock()
		select {
		case <-s.stop:
			fmt.Fprint(s.w, "\r\x1b[K")
			return
		case <-t.C:
		}
	}
}

// Stop clears the spinner; safe to call more than once.
func (s *Spinner) Stop() {
	s.mu.Lock()
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.mu.Unlock()
	s.done.Wait()
}

// Bytes formats a byte count in binary units.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Duration formats an RTT compactly ("1.23ms", "-" for zero).
func Duration(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	}
	return d.Round(time.Millisecond).String()
}

// Dash returns s, or "-" when empty.
func Dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
