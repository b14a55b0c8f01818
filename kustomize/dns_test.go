package kustomize

import (
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// TestDNSLameDuckOutlastsReadiness checks the rendered mcnet-dns Deployment against
// what a rollout needs to lose no question: a stopping replica must still answer when
// kube-proxy deletes the conntrack flows that pin CoreDNS's reused sockets to it,
// which happens only after the readiness probe marked it not ready and a kube-proxy
// sync ran on every node; and it must stop of its own accord before the kubelet kills
// it at the end of the termination grace.
func TestDNSLameDuckOutlastsReadiness(t *testing.T) {
	tree, err := Render(loadFleet(t), testOptions)
	if err != nil {
		t.Fatal(err)
	}
	data, ok := tree["bases/mcnet/dns.yaml"]
	if !ok {
		t.Fatal("bases/mcnet/dns.yaml not rendered")
	}
	var dep *appsv1.Deployment
	for _, doc := range strings.Split(string(data), "\n---\n") {
		if !strings.Contains(doc, "kind: Deployment") {
			continue
		}
		dep = &appsv1.Deployment{}
		if err := yaml.UnmarshalStrict([]byte(doc), dep); err != nil {
			t.Fatalf("decode the mcnet-dns Deployment: %v", err)
		}
	}
	if dep == nil {
		t.Fatal("no Deployment in bases/mcnet/dns.yaml")
	}
	spec := dep.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("mcnet-dns has %d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	var delay time.Duration
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--shutdown-delay="); ok {
			if delay, err = time.ParseDuration(v); err != nil {
				t.Fatalf("%s: %v", a, err)
			}
		}
	}
	if delay == 0 {
		t.Fatalf("mcnet-dns args %q: no --shutdown-delay; a rollout would stop replicas while flows still lead to them", c.Args)
	}
	p := c.ReadinessProbe
	if p == nil {
		t.Fatal("mcnet-dns has no readinessProbe")
	}
	// The API's defaults where the manifest leaves a field out.
	period, failures, timeout := int32(10), int32(3), int32(1)
	if p.PeriodSeconds != 0 {
		period = p.PeriodSeconds
	}
	if p.FailureThreshold != 0 {
		failures = p.FailureThreshold
	}
	if p.TimeoutSeconds != 0 {
		timeout = p.TimeoutSeconds
	}
	// Marked not ready after the failures (the last may take its timeout), then the
	// EndpointSlice update and a kube-proxy sync, which kube-proxy rate-limits to one
	// a second: 3 s for those on a loaded node.
	notReady := time.Duration(period*failures+timeout)*time.Second + 3*time.Second
	if delay < notReady {
		t.Errorf("--shutdown-delay=%s: a stopping replica stops before kube-proxy can have moved its flows (probe every %ds, %d failures, timeout %ds, +3s for the EndpointSlice and kube-proxy: %s)",
			delay, period, failures, timeout, notReady)
	}
	grace := 30 * time.Second
	if spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	}
	if delay+5*time.Second > grace {
		t.Errorf("--shutdown-delay=%s leaves less than 5 s of the %s termination grace to stop in", delay, grace)
	}
}
