package kustomize

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

// FleetFile is where a rendered tree keeps the Fleet table, relative to its root.
var FleetFile = filepath.Join(DirFleet, "fleet.yaml")

// ReadKept reads the Fleet table an earlier render wrote into dir, so a new render keeps
// the global pod ranges it allocated (Options.Kept): the allocation's state lives in
// Git, beside the tree it belongs to. A missing file, or the table of another fleet,
// is no state (nil); a file that is there but does not read is an error, since
// rendering without it could move allocations.
func ReadKept(dir, fleetName string) (*mcnetv1.Fleet, error) {
	b, err := os.ReadFile(filepath.Join(dir, FleetFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the previous fleet table: %w", err)
	}
	var f mcnetv1.Fleet
	if err := yaml.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: the previous render's fleet table does not parse (%w); it holds the global pod ranges already allocated: restore it from Git", filepath.Join(dir, FleetFile), err)
	}
	// A directory reused for another fleet holds none of this fleet's allocations:
	// starting afresh is right, and carrying them over would be wrong.
	if f.Kind != "Fleet" || f.Name != fleetName {
		return nil, nil
	}
	return &f, nil
}
