package diagnose

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/inspect"
	"github.com/mcnet-io/mcnet/internal/naming"
	"github.com/mcnet-io/mcnet/kustomize"
)

var codeRE = regexp.MustCompile(`MCN\d{4}`)

// TestCodesDocumented keeps docs/diagnose.md and the codes used in code in step.
func TestCodesDocumented(t *testing.T) {
	used := map[string]bool{}
	files, _ := filepath.Glob("*.go")
	cli, _ := filepath.Glob("../cli/diagnose/*.go")
	for _, f := range append(files, cli...) {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range codeRE.FindAllString(string(data), -1) {
			used[c] = true
		}
	}
	doc, err := os.ReadFile("../../docs/diagnose.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^### (MCN\d{4})$`).FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = true
	}
	if diff := cmp.Diff(keys(used), keys(documented)); diff != "" {
		t.Errorf("codes used in code (-) vs documented in docs/diagnose.md (+):\n%s", diff)
	}
	for c := range used {
		if _, ok := Catalog[c]; !ok {
			t.Errorf("%s is used but not in Catalog", c)
		}
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestOverlaps(t *testing.T) {
	got := Overlaps([]Network{
		{Cluster: "east", PodCIDRs: []string{"10.1.0.0/16"}, ServiceCIDRs: []string{"10.101.0.0/16"}},
		{Cluster: "west", PodCIDRs: []string{"10.1.128.0/17"}, ServiceCIDRs: []string{"10.102.0.0/16"}},
	})
	if len(got) != 1 || got[0].Code != "MCN1201" || got[0].Result != Fail || !strings.Contains(got[0].Message, "east pod 10.1.0.0/16 overlaps west pod 10.1.128.0/17") {
		t.Errorf("got %+v, want one MCN1201 naming both networks", got)
	}
	if got := Overlaps([]Network{{Cluster: "a", PodCIDRs: []string{"10.1.0.0/16"}}, {Cluster: "b", PodCIDRs: []string{"10.2.0.0/16"}}}); got[0].Result != OK {
		t.Errorf("disjoint networks: got %+v", got)
	}
}

func TestForwardsDomain(t *testing.T) {
	corefile := `.:53 {
    errors
    forward . /etc/resolv.conf
}
clusterset.local:53 {
    forward . 10.96.0.53
}
`
	for _, tc := range []struct {
		domain, ip string
		want       bool
	}{{"clusterset.local", "10.96.0.53", true}, {"clusterset.local.", "10.96.0.53", true}, {"clusterset.local", "10.96.0.54", false}, {"other.local", "10.96.0.53", false}} {
		if got := ForwardsDomain(corefile, tc.domain, tc.ip); got != tc.want {
			t.Errorf("ForwardsDomain(%s, %s) = %v, want %v", tc.domain, tc.ip, got, tc.want)
		}
	}
	// The rendered block: a comment naming the domain, dual-stack targets, ports.
	block := kustomize.CoreDNSServerBlock("clusterset.local", []string{"10.120.0.53", "fd00:120::35"})
	for _, ip := range []string{"10.120.0.53", "fd00:120::35"} {
		if !ForwardsDomain(block, "clusterset.local", ip) {
			t.Errorf("rendered block does not forward to %s:\n%s", ip, block)
		}
	}
	if ForwardsDomain("# clusterset.local:53 { forward . 10.1.1.1 }\n", "clusterset.local", "10.1.1.1") {
		t.Error("a commented-out block counts")
	}
	if !ForwardsDomain("dns://clusterset.local:53 {\n forward . dns://[fd00::53]:53\n}\n", "clusterset.local", "fd00::53") {
		t.Error("dns:// forms with an IPv6 target and port do not count")
	}
}

func TestImportedServerBlocks(t *testing.T) {
	for _, tc := range []struct{ corefile, want string }{
		{".:53 {\n    errors\n}\nimport /etc/coredns/mcnet/*.server\n", "/etc/coredns/mcnet/*.server"},
		{".:53 {\n    import /etc/coredns/custom/*.override\n}\n", ""}, // inside a block: a snippet, not server blocks
		{"# import /etc/coredns/mcnet/*.server\n.:53 {\n}\n", ""},
	} {
		if got := ImportedServerBlocks(tc.corefile); got != tc.want {
			t.Errorf("ImportedServerBlocks(%q) = %q, want %q", tc.corefile, got, tc.want)
		}
	}
}

func TestSubset(t *testing.T) {
	want := map[string]any{"spec": map[string]any{"replicas": float64(1), "args": []any{"--a=1"}}, "status": map[string]any{"x": "y"}}
	live := map[string]any{"spec": map[string]any{"replicas": float64(1), "args": []any{"--a=1"}, "defaulted": true}}
	if d := Subset(want, live, ""); len(d) != 0 {
		t.Errorf("defaults and status counted as drift: %v", d)
	}
	live["spec"].(map[string]any)["args"] = []any{"--a=2"}
	if d := Subset(want, live, ""); !slices.Equal(d, []string{".spec.args[0]"}) {
		t.Errorf("got %v, want .spec.args[0]", d)
	}
}

// TestAllocationNamesTheOffender gives hub's snapshot a west publishing east's pods and
// the metadata address, and an Endpoint of a cluster outside the table.
func TestAllocationNamesTheOffender(t *testing.T) {
	fleet := &mcnetv1.Fleet{Spec: mcnetv1.FleetSpec{Clusters: []mcnetv1.FleetMember{
		{Name: "hub", PodCIDRs: []string{"10.0.0.0/16"}, ServiceCIDRs: []string{"10.100.0.0/16"}},
		{Name: "east", PodCIDRs: []string{"10.10.0.0/16"}, ServiceCIDRs: []string{"10.110.0.0/16"}},
		{Name: "west", PodCIDRs: []string{"10.20.0.0/16"}, ServiceCIDRs: []string{"10.120.0.0/16"}},
	}}}
	fleet.Name = "prod"
	ep := func(id string, subnets ...string) mcnetv1.Endpoint {
		e := mcnetv1.Endpoint{Spec: mcnetv1.EndpointSpec{ClusterID: id, Subnets: subnets}}
		e.Name = id
		return e
	}
	s := &inspect.Snapshot{ClusterID: "hub", Fleet: fleet, Endpoints: []mcnetv1.Endpoint{
		ep("hub", "10.0.0.0/16"),
		ep("east", "10.10.0.0/16"),
		ep("west", "10.20.0.0/16", "10.10.0.0/16", "169.254.169.254/32"),
		ep("evil", "10.66.0.0/16"),
	}}
	got := Allocation(s)
	if len(got) != 2 {
		t.Fatalf("%d findings, want 2 (evil, west): %+v", len(got), got)
	}
	for i, want := range []struct{ offender, text string }{
		{"evil", "not a member of fleet prod"},
		{"west", "spec.subnets[1] 10.10.0.0/16: outside its allocation"},
	} {
		c := got[i]
		if c.Code != "MCN1205" || c.Result != Fail || c.Offender != want.offender || !strings.Contains(c.Message, "cluster "+want.offender) || !strings.Contains(c.Message, want.text) {
			t.Errorf("finding %d: %+v; want MCN1205 naming %s and %q", i, c, want.offender, want.text)
		}
	}
	if !strings.Contains(got[1].Message, "169.254.169.254/32") {
		t.Errorf("west's finding does not name the metadata address: %s", got[1].Message)
	}
	s.Endpoints = s.Endpoints[:2]
	if got := Allocation(s); len(got) != 1 || got[0].Result != OK {
		t.Errorf("a fleet within its allocations: %+v, want one OK", got)
	}
}

func TestExportCapsNameTheWriter(t *testing.T) {
	fleet := &mcnetv1.Fleet{Spec: mcnetv1.FleetSpec{Clusters: []mcnetv1.FleetMember{
		{Name: "hub", PodCIDRs: []string{"10.0.0.0/16"}, ServiceCIDRs: []string{"10.100.0.0/16"}},
		{Name: "west", PodCIDRs: []string{"10.20.0.0/16"}, ServiceCIDRs: []string{"10.120.0.0/16"}, MaxExports: 2},
	}}}
	fleet.Name = "prod"
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	export := func(writer, service string, age time.Duration) mcsv1alpha1.ServiceImport {
		si := mcsv1alpha1.ServiceImport{}
		si.Name, si.Labels = naming.BrokerName("app", service, writer), naming.BrokerLabels("app", service, writer)
		si.CreationTimestamp = metav1.NewTime(t0.Add(-age))
		return si
	}
	// west's four exports, listed newest first: the two oldest are imported. hub's
	// three are within the default cap; evil is no member and not counted (no receiver imports its exports).
	exports := []mcsv1alpha1.ServiceImport{
		export("west", "d", 1*time.Minute), export("west", "c", 2*time.Minute), export("west", "b", 3*time.Minute), export("west", "a", 4*time.Minute),
		export("hub", "a", time.Minute), export("hub", "b", time.Minute), export("hub", "c", time.Minute),
		export("evil", "a", time.Minute), export("evil", "b", time.Minute), export("evil", "c", time.Minute),
	}
	got := ExportCaps("hub", fleet, exports)
	if len(got) != 1 {
		t.Fatalf("%d findings, want 1 (west): %+v", len(got), got)
	}
	c := got[0]
	for _, want := range []string{"cluster west publishes 4 exports", "maxExports 2 in fleet prod", "ignore its 2 newest: app/c, app/d"} {
		if !strings.Contains(c.Message, want) {
			t.Errorf("message %q does not say %q", c.Message, want)
		}
	}
	if c.Code != "MCN1108" || c.Result != Fail || c.Offender != "west" || c.Cluster != "hub" || !strings.Contains(c.Hint, "spec.clusters[].maxExports") {
		t.Errorf("finding %+v; want a failed MCN1108 seen in hub, offender west, its hint naming spec.clusters[].maxExports", c)
	}
	fleet.Spec.Clusters[1].MaxExports = 4
	if got := ExportCaps("hub", fleet, exports); len(got) != 1 || got[0].Result != OK {
		t.Errorf("every writer within its cap: %+v, want one OK", got)
	}
	fleet.Spec.Clusters[1].MaxExports = 0 // the default, 512
	if got := ExportCaps("hub", fleet, exports); len(got) != 1 || got[0].Result != OK {
		t.Errorf("west within the default cap: %+v, want one OK", got)
	}
}
