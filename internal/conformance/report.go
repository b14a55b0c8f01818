// Package conformance runs the Multi-Cluster Services API conformance suite
// (sigs.k8s.io/mcs-api/conformance, a Ginkgo suite built as a test binary) against a set
// of clusters, unmodified, and reads the report it leaves: which specs passed, by label.
//
// The suite runs as its own process: it and controller-runtime both register a global
// -kubeconfig flag, so it cannot be linked into one binary with mcnet's code.
package conformance

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
)

// The suite's reporting labels: every spec carries exactly one.
const (
	Required = "Required"
	Optional = "Optional"
)

// Outcome is what a spec's run says about conformance.
type Outcome string

// Outcomes, following the suite's own report: a failed assertion that the suite marks
// non-conformant is a Fail; any other failure (a pod that never started, an API error)
// leaves conformance unknown, an Error.
const (
	Pass    Outcome = "pass"
	Fail    Outcome = "FAIL"
	Error   Outcome = "ERROR"
	Skipped Outcome = "skipped"
)

// Spec is one spec of a run.
type Spec struct {
	// Name is the spec's full text: its containers' texts and its own.
	Name string
	// Label is Required or Optional.
	Label string
	// Labels are the spec's other labels (DNS, ClusterIP, Connectivity...), sorted.
	Labels []string
	// Outcome of the run.
	Outcome Outcome
	// Message is the first line of the failure or skip message.
	Message string
}

// ginkgoReport is the part of Ginkgo's JSON report (-ginkgo.json-report) read here.
type ginkgoReport struct {
	SuiteDescription string
	SpecReports      []struct {
		ContainerHierarchyTexts  []string
		ContainerHierarchyLabels [][]string
		LeafNodeType             string
		LeafNodeText             string
		LeafNodeLabels           []string
		State                    string
		Failure                  struct{ Message string }
		ReportEntries            []struct{ Name string }
	}
}

// nonConformant is the report entry the suite adds to a spec whose failure shows
// non-conformance.
const nonConformant = "non-conformant"

// ReadReport reads the specs of a Ginkgo JSON report, sorted by label, then name.
func ReadReport(r io.Reader) ([]Spec, error) {
	var reports []ginkgoReport
	if err := json.NewDecoder(r).Decode(&reports); err != nil {
		return nil, fmt.Errorf("read Ginkgo JSON report: %w", err)
	}
	var specs []Spec
	for _, rep := range reports {
		for _, sr := range rep.SpecReports {
			if sr.LeafNodeType != "It" {
				continue // suite setup and reporting nodes
			}
			s := Spec{}
			var texts []string
			for _, t := range append(slices.Clone(sr.ContainerHierarchyTexts), sr.LeafNodeText) {
				if t = strings.TrimSpace(t); t != "" {
					texts = append(texts, t)
				}
			}
			s.Name = strings.Join(texts, " ")
			labels := slices.Clone(sr.LeafNodeLabels)
			for _, ls := range sr.ContainerHierarchyLabels {
				labels = append(labels, ls...)
			}
			slices.Sort(labels)
			for _, l := range slices.Compact(labels) {
				if l == Required || l == Optional {
					s.Label = l
				} else {
					s.Labels = append(s.Labels, l)
				}
			}
			s.Outcome, s.Message = outcome(sr.State, sr.Failure.Message, slices.ContainsFunc(sr.ReportEntries, func(e struct{ Name string }) bool { return e.Name == nonConformant }))
			specs = append(specs, s)
		}
	}
	slices.SortFunc(specs, func(a, b Spec) int {
		return cmp.Or(cmp.Compare(labelOrder(a.Label), labelOrder(b.Label)), cmp.Compare(a.Name, b.Name))
	})
	return specs, nil
}

func outcome(state, msg string, nonConformant bool) (Outcome, string) {
	first, _, _ := strings.Cut(strings.TrimSpace(msg), "\n")
	switch {
	case state == "passed":
		return Pass, ""
	case state == "skipped" || state == "pending":
		return Skipped, first
	case nonConformant:
		return Fail, first
	default:
		return Error, first
	}
}

func labelOrder(l string) int {
	switch l {
	case Required:
		return 0
	case Optional:
		return 1
	}
	return 2
}

// Count is how many specs of a label passed, out of how many.
type Count struct{ Passed, Total int }

// Counts counts the specs by label.
func Counts(specs []Spec) map[string]Count {
	out := map[string]Count{}
	for _, s := range specs {
		c := out[s.Label]
		c.Total++
		if s.Outcome == Pass {
			c.Passed++
		}
		out[s.Label] = c
	}
	return out
}

// Summary is the counts line: "Required 12/14, Optional 9/13".
func Summary(specs []Spec) string {
	c := Counts(specs)
	return fmt.Sprintf("Required %d/%d, Optional %d/%d", c[Required].Passed, c[Required].Total, c[Optional].Passed, c[Optional].Total)
}

// WriteTable prints one line per spec (label, outcome, spec, and why it did not pass),
// then the counts.
func WriteTable(w io.Writer, specs []Spec) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LABEL\tRESULT\tSPEC")
	for _, s := range specs {
		name := s.Name
		if len(s.Labels) > 0 {
			name += " [" + strings.Join(s.Labels, ",") + "]"
		}
		if s.Message != "" {
			name += " — " + s.Message
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", cmp.Or(s.Label, "-"), s.Outcome, name)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, Summary(specs))
	return err
}
