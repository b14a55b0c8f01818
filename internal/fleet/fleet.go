// Package fleet reads a ClusterSet fleet file strictly (unknown and duplicate fields are
// errors), then fills in defaults and validates it with the API's own
// SetDefaults_ClusterSet and ValidateClusterSet, reporting every problem at once with the
// field that has it and how to fix it.
package fleet

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

// ErrInvalid is wrapped by every error that is the fleet file's fault, so callers can
// tell bad input (exit 2) from other failures.
var ErrInvalid = errors.New("invalid fleet")

// Load reads, defaults and validates the fleet file at path.
func Load(path string) (*mcnetv1.ClusterSet, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read fleet: %w", err)
	}
	cs, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cs, nil
}

// Parse decodes a fleet document strictly (unknown or duplicate fields are errors), fills
// in defaults and validates it.
func Parse(data []byte) (*mcnetv1.ClusterSet, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("%w: the file is empty; start from examples/fleet.yaml", ErrInvalid)
	}
	var cs mcnetv1.ClusterSet
	js, err := yaml.YAMLToJSONStrict(data) // rejects duplicate keys
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	// sigs.k8s.io/json names the full path of every unknown field, as kubectl does.
	strict, err := kjson.UnmarshalStrict(js, &cs)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if len(strict) > 0 {
		msgs := make([]string, len(strict))
		for i, e := range strict {
			msgs[i] = "  - " + e.Error()
		}
		return nil, fmt.Errorf("%w: fleet has %d problem(s):\n%s\n(check the spelling against examples/fleet.yaml)", ErrInvalid, len(strict), strings.Join(msgs, "\n"))
	}
	mcnetv1.SetDefaults_ClusterSet(&cs)
	if errs := mcnetv1.ValidateClusterSet(&cs); len(errs) > 0 {
		return nil, &ValidationError{Errors: errs}
	}
	return &cs, nil
}

// ValidationError lists every problem found in a fleet.
type ValidationError struct {
	Errors field.ErrorList
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "fleet has %d problem(s):", len(e.Errors))
	for _, fe := range e.Errors {
		b.WriteString("\n  - ")
		b.WriteString(fe.Error())
	}
	return b.String()
}

// Unwrap lets errors.Is(err, ErrInvalid) identify bad input.
func (e *ValidationError) Unwrap() error { return ErrInvalid }
