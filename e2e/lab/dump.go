package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"
)

// Dump returns what a failed test needs to explain itself: the last lines of every
// process log and, per cluster, its nodes, pods, services, EndpointSlices and every
// object of the mcnet.io and multicluster.x-k8s.io API groups.
func (l *Lab) Dump(ctx context.Context) string {
	var b strings.Builder
	fmt.Fprintf(&b, "=== lab %s (dir %s, logs %s)\n", l.RunID, l.Dir, l.LogDir)
	var logs []string
	_ = filepath.WalkDir(l.LogDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			logs = append(logs, p)
		}
		return nil
	})
	sort.Strings(logs)
	for _, p := range logs {
		rel, _ := filepath.Rel(l.LogDir, p)
		fmt.Fprintf(&b, "--- log %s (last 15 lines)\n%s\n", rel, tail(p, 15))
	}
	for _, c := range l.clusters {
		if c.Config != nil {
			b.WriteString(c.dump(ctx))
		}
	}
	return b.String()
}

func (c *Cluster) dump(ctx context.Context) string {
	var b strings.Builder
	fmt.Fprintf(&b, "=== cluster %s objects\n", c.Name)
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return b.String() + err.Error() + "\n"
	}
	gvrs := []schema.GroupVersionResource{
		{Version: "v1", Resource: "nodes"},
		{Version: "v1", Resource: "pods"},
		{Version: "v1", Resource: "services"},
		{Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices"},
		{Group: "apps", Version: "v1", Resource: "deployments"},
		{Group: "apps", Version: "v1", Resource: "daemonsets"},
	}
	if lists, err := c.Client.Discovery().ServerPreferredResources(); err == nil || len(lists) > 0 {
		for _, list := range lists {
			gv, err := schema.ParseGroupVersion(list.GroupVersion)
			if err != nil || !(strings.HasSuffix(gv.Group, "mcnet.io") || gv.Group == "multicluster.x-k8s.io") {
				continue
			}
			for _, r := range list.APIResources {
				if !strings.Contains(r.Name, "/") {
					gvrs = append(gvrs, gv.WithResource(r.Name))
				}
			}
		}
	}
	for _, gvr := range gvrs {
		ul, err := dyn.Resource(gvr).List(ctx, metav1.ListOptions{})
		if err != nil {
			fmt.Fprintf(&b, "--- %s: %v\n", gvr, err)
			continue
		}
		for _, u := range ul.Items {
			u.SetManagedFields(nil)
			y, _ := yaml.Marshal(u.Object)
			fmt.Fprintf(&b, "--- %s %s/%s\n%s", gvr.Resource, u.GetNamespace(), u.GetName(), y)
		}
	}
	return b.String()
}
