package show

import (
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/mcnet-io/mcnet/internal/output"
)

// DeepCopyObject makes the report a runtime.Object, which cli-runtime's printers take.
func (r *Report) DeepCopyObject() runtime.Object { return output.DeepCopyJSON(r) }

// Subjects are what -o name prints: each cluster shown, by its fleet name, or by its
// context when it could not be read.
func (r *Report) Subjects() []runtime.Object {
	var names []string
	for _, c := range r.Clusters {
		if c.Cluster != "" {
			names = append(names, c.Cluster)
		} else {
			names = append(names, c.Context)
		}
	}
	return output.ClusterSubjects(names...)
}

// InNamespace keeps only the services of namespace ns; "" keeps them all. It filters
// the report rather than the reads so that every section is built from one snapshot.
func (r *Report) InNamespace(ns string) {
	if ns == "" {
		return
	}
	for i := range r.Clusters {
		sv := r.Clusters[i].Services
		if sv == nil {
			continue
		}
		exports, imports := sv.Exports[:0], sv.Imports[:0]
		for _, e := range sv.Exports {
			if e.Namespace == ns {
				exports = append(exports, e)
			}
		}
		for _, im := range sv.Imports {
			if im.Namespace == ns {
				imports = append(imports, im)
			}
		}
		sv.Exports, sv.Imports = exports, imports
	}
}
