package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/mcnet-io/mcnet/e2e/lab/proc"
)

// Dump returns what a failed test needs to explain itself: the last lines of every
// process log and, per cluster, a line per node, pod, Service and EndpointSlice, and
// every object of the mcnet.io and multicluster.x-k8s.io API groups in full.
func (l *Lab) Dump(ctx context.Context) string {
	dump, _ := l.DumpState(ctx)
	return dump
}

// DumpState is Dump and, from the same reads, the lines a reader looks at first:
// nodes whose Ready is not True and pods not ready or with a container waiting or
// restarted, each prefixed with its cluster's name.
func (l *Lab) DumpState(ctx context.Context) (dump string, troubled []string) {
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
		fmt.Fprintf(&b, "--- log %s (last 15 lines)\n%s\n", rel, proc.Tail(p, 15))
	}
	for _, c := range l.clusters {
		if c.Config != nil {
			d, t := c.dump(ctx)
			b.WriteString(d)
			troubled = append(troubled, t...)
		}
	}
	return b.String(), troubled
}

func (c *Cluster) dump(ctx context.Context) (string, []string) {
	var b strings.Builder
	var troubled []string
	line := func(l string, trouble bool) {
		b.WriteString(l + "\n")
		if trouble {
			troubled = append(troubled, c.Name+": "+l)
		}
	}
	fmt.Fprintf(&b, "=== cluster %s\n", c.Name)
	// Core objects as one line each: enough to see what ran where and what was ready.
	if nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err == nil {
		for _, n := range nodes.Items {
			line(nodeLine(&n))
		}
	}
	if pods, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); err == nil {
		for _, p := range pods.Items {
			line(podLine(&p))
		}
	}
	if svcs, err := c.Client.CoreV1().Services("").List(ctx, metav1.ListOptions{}); err == nil {
		for _, s := range svcs.Items {
			fmt.Fprintf(&b, "service %s/%s clusterIP=%s\n", s.Namespace, s.Name, s.Spec.ClusterIP)
		}
	}
	if eps, err := c.Client.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{}); err == nil {
		for _, e := range eps.Items {
			var addrs []string
			for _, ep := range e.Endpoints {
				addrs = append(addrs, fmt.Sprintf("%v(ready=%v)", ep.Addresses, ep.Conditions.Ready != nil && *ep.Conditions.Ready))
			}
			fmt.Fprintf(&b, "endpointslice %s/%s %s\n", e.Namespace, e.Name, strings.Join(addrs, " "))
		}
	}

	// mcnet's own objects and the Multi-Cluster Services ones in full.
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return b.String() + err.Error() + "\n", troubled
	}
	var gvrs []schema.GroupVersionResource
	lists, _ := c.Client.Discovery().ServerPreferredResources() // partial results are fine
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
	return b.String(), troubled
}

// nodeLine is a node's line of the dump, and whether its Ready is not True.
func nodeLine(n *corev1.Node) (string, bool) {
	ready := ""
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			ready = string(cond.Status)
		}
	}
	return fmt.Sprintf("node %s ready=%s labels=%v", n.Name, ready, n.Labels), ready != string(corev1.ConditionTrue)
}

// podLine is a pod's line of the dump, and whether the pod is not ready or has a
// container waiting or restarted.
func podLine(p *corev1.Pod) (string, bool) {
	ready := ""
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			ready = string(cond.Status)
		}
	}
	var waiting []string
	for _, cs := range p.Status.ContainerStatuses {
		if cs.State.Waiting != nil {
			waiting = append(waiting, cs.Name+": "+cs.State.Waiting.Reason+" "+cs.State.Waiting.Message)
		}
		if cs.RestartCount > 0 {
			waiting = append(waiting, fmt.Sprintf("%s: %d restarts", cs.Name, cs.RestartCount))
		}
	}
	l := fmt.Sprintf("pod %s/%s node=%s ip=%s ready=%s %s", p.Namespace, p.Name, p.Spec.NodeName, p.Status.PodIP, ready, strings.Join(waiting, "; "))
	return l, ready != string(corev1.ConditionTrue) || len(waiting) > 0
}

// ContainerLogLines returns the lines containing match that container logged in the
// pods of namespace ns whose names start with podPrefix, on every node of c, current
// and earlier containers alike (the kubelet's log files under the node's
// /var/log/pods). Each line is prefixed with its pod's name.
func (c *Cluster) ContainerLogLines(ns, podPrefix, container, match string) ([]string, error) {
	dirs, err := filepath.Glob(filepath.Join(c.lab.LogDir, c.Name, "*", "pods", ns+"_"+podPrefix+"*", container))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, dir := range dirs {
		pod := strings.SplitN(filepath.Base(filepath.Dir(dir)), "_", 3)[1]
		files, err := filepath.Glob(filepath.Join(dir, "*.log"))
		if err != nil {
			return nil, err
		}
		sort.Strings(files)
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			for line := range strings.Lines(string(b)) {
				if strings.Contains(line, match) {
					out = append(out, pod+": "+strings.TrimSuffix(line, "\n"))
				}
			}
		}
	}
	return out, nil
}
