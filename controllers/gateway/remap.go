package gateway

import (
	"github.com/go-logr/logr"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/dataplane"
)

// readRemap is what the kernel's remap chains translate, for the Gateway status
// (diagnose compares it with the fleet table); nil when the dataplane cannot read
// them back (a fake in tests) or the read fails (logged).
func readRemap(dp any, log logr.Logger) []mcnetv1.RemapStatus {
	r, ok := dp.(interface {
		ReadRemap() ([]dataplane.PrefixMap, error)
	})
	if !ok {
		return nil
	}
	maps, err := r.ReadRemap()
	if err != nil {
		log.Error(err, "Cannot read the remap chains back")
		return nil
	}
	var out []mcnetv1.RemapStatus
	for _, m := range maps {
		out = append(out, mcnetv1.RemapStatus{Real: m.Real.String(), Global: m.Global.String(), Service: m.Stateless})
	}
	return out
}
