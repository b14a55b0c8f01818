package diagnose

import (
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/mcnet-io/mcnet/internal/output"
)

// DeepCopyObject makes the report a runtime.Object, which cli-runtime's printers take.
func (r *Report) DeepCopyObject() runtime.Object { return output.DeepCopyJSON(r) }

// Subjects are what -o name prints: the clusters with a failed check, so a script can
// act on exactly those (the exit code still says whether any check failed).
func (r *Report) Subjects() []runtime.Object {
	var names []string
	for _, c := range r.Checks {
		if c.Result == Fail {
			names = append(names, c.Cluster)
		}
	}
	return output.ClusterSubjects(names...)
}
