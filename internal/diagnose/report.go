// Package diagnose checks an mcnet fleet — live clusters, a fleet file, a rendered
// tree — and reports each check as one line with a stable code and a hint, grouped by
// area in the style of linkerd check. Every code is documented in docs/diagnose.md.
package diagnose

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/mcnet-io/mcnet/internal/output"
)

// Kind is the kind of the report document.
const Kind = "DiagnoseReport"

// Result of one check.
const (
	OK   = "ok"
	Warn = "warn"
	Fail = "fail"
	Skip = "skip"
)

// Areas, in the order they are printed.
var Areas = []string{"kubernetes", "broker", "networks", "gateways", "connections", "datapath", "versions", "dns", "gitops"}

// Check is one line of the report.
type Check struct {
	Area    string `json:"area"`
	Name    string `json:"name"`
	Result  string `json:"result"`
	Code    string `json:"code,omitempty"`
	Cluster string `json:"cluster,omitempty"`
	// Offender is the cluster whose publication the finding is about, when it is not
	// Cluster (where it was seen), e.g. a member publishing outside its allocation.
	Offender string `json:"offender,omitempty"`
	Message  string `json:"message,omitempty"`
	Hint     string `json:"hint,omitempty"`
}

// Summary counts results.
type Summary struct {
	OK   int `json:"ok"`
	Warn int `json:"warn"`
	Fail int `json:"fail"`
	Skip int `json:"skip"`
}

// Report is diagnose's document.
type Report struct {
	output.TypeMeta `json:",inline"`
	PluginVersion   string   `json:"pluginVersion"`
	Clusters        []string `json:"clusters,omitempty"`
	Summary         Summary  `json:"summary"`
	Checks          []Check  `json:"checks"`
}

// Add appends checks and keeps the summary.
func (r *Report) Add(cs ...Check) {
	for _, c := range cs {
		switch c.Result {
		case OK:
			r.Summary.OK++
		case Warn:
			r.Summary.Warn++
		case Fail:
			r.Summary.Fail++
		default:
			r.Summary.Skip++
		}
		r.Checks = append(r.Checks, c)
	}
}

// Sort orders checks by area, keeping the order within an area.
func (r *Report) Sort() {
	slices.SortStableFunc(r.Checks, func(a, b Check) int {
		if d := slices.Index(Areas, a.Area) - slices.Index(Areas, b.Area); d != 0 {
			return d
		}
		return strings.Compare(a.Cluster, b.Cluster)
	})
}

// ok, warn and fail build checks; code's hint comes from the catalogue.
func ok(area, cluster, name string) Check {
	return Check{Area: area, Name: name, Result: OK, Cluster: cluster}
}

func finding(result, code, cluster, name, msg string, args ...any) Check {
	return Check{Area: Catalog[code].Area, Name: name, Result: result, Code: code, Cluster: cluster, Message: fmt.Sprintf(msg, args...), Hint: Catalog[code].Hint}
}

func fail(code, cluster, name, msg string, args ...any) Check {
	return finding(Fail, code, cluster, name, msg, args...)
}

func warn(code, cluster, name, msg string, args ...any) Check {
	return finding(Warn, code, cluster, name, msg, args...)
}

func skip(area, cluster, name, why string) Check {
	return Check{Area: area, Name: name, Result: Skip, Cluster: cluster, Message: why}
}

// Print writes the report linkerd-check style: areas as headers, one line per check,
// code, message and hint under each finding, a summary last.
func Print(w io.Writer, st output.Style, r *Report) {
	area := ""
	for _, c := range r.Checks {
		if c.Area != area {
			if area != "" {
				fmt.Fprintln(w)
			}
			area = c.Area
			fmt.Fprintln(w, st.Bold(area))
			fmt.Fprintln(w, st.Bold(dashes(len(area))))
		}
		who := ""
		if c.Cluster != "" {
			who = "[" + c.Cluster + "] "
		}
		fmt.Fprintf(w, "%s %s%s\n", st.Mark(c.Result), who, c.Name)
		if c.Result == Skip && c.Message != "" {
			fmt.Fprintf(w, "    %s\n", st.Faint("skipped: "+c.Message))
		}
		if c.Result == Warn || c.Result == Fail {
			fmt.Fprintf(w, "    %s %s\n", paint(st, c.Result, c.Code), c.Message)
			if c.Hint != "" {
				fmt.Fprintf(w, "    %s\n", st.Faint("hint: "+c.Hint))
			}
			fmt.Fprintf(w, "    %s\n", st.Faint("see: docs/diagnose.md#"+lower(c.Code)))
		}
	}
	fmt.Fprintln(w)
	s := r.Summary
	line := fmt.Sprintf("Status check results: %d ok, %d warnings, %d failed, %d skipped", s.OK, s.Warn, s.Fail, s.Skip)
	switch {
	case s.Fail > 0:
		fmt.Fprintln(w, st.Bad(line))
	case s.Warn > 0:
		fmt.Fprintln(w, st.Warn(line))
	default:
		fmt.Fprintln(w, st.Good(line))
	}
}

func paint(st output.Style, result, s string) string {
	if result == Fail {
		return st.Bad(s)
	}
	return st.Warn(s)
}

func dashes(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = '-'
	}
	return string(b)
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
