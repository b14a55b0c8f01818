package diagnose

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/inspect"
)

func remappedSnapshot(id string, global string, remap ...mcnetv1.RemapStatus) *inspect.Snapshot {
	fleet := &mcnetv1.Fleet{Spec: mcnetv1.FleetSpec{Clusters: []mcnetv1.FleetMember{
		{Name: "east", PodCIDRs: []string{"10.244.0.0/16"}, ServiceCIDRs: []string{"10.96.0.0/12"}, GlobalPodCIDRs: []string{global}, GlobalServiceCIDRs: []string{"100.80.0.0/12"}, Remapped: true},
		{Name: "west", PodCIDRs: []string{"10.244.0.0/16"}, ServiceCIDRs: []string{"10.96.0.0/12"}, GlobalPodCIDRs: []string{"100.65.0.0/16"}, GlobalServiceCIDRs: []string{"100.96.0.0/12"}, Remapped: true},
	}}}
	gw := mcnetv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: id + "-gw"}, Status: mcnetv1.GatewayStatus{HAStatus: mcnetv1.HAActive, Remap: remap}}
	return &inspect.Snapshot{ClusterID: id, Fleet: fleet, Gateways: []mcnetv1.Gateway{gw}}
}

func TestGlobalnetMapAndAgreement(t *testing.T) {
	a, b := remappedSnapshot("east", "100.64.0.0/16"), remappedSnapshot("west", "100.64.0.0/16")
	got := Globalnet([]*inspect.Snapshot{a, b})
	if len(got) != 2 || got[0].Result != OK || !strings.Contains(got[0].Name, "pods 100.64.0.0/16, services 100.80.0.0/12") {
		t.Errorf("agreeing tables: got %+v, want the map of east and west", got)
	}
	b = remappedSnapshot("west", "100.70.0.0/16")
	got = Globalnet([]*inspect.Snapshot{a, b})
	if len(got) == 0 || got[0].Code != "MCN1206" || !strings.Contains(got[0].Message, "100.70.0.0/16") {
		t.Errorf("disagreeing tables: got %+v, want MCN1206 naming both", got)
	}
}

func TestRemapKernel(t *testing.T) {
	pods := mcnetv1.RemapStatus{Real: "10.244.0.0/16", Global: "100.64.0.0/16"}
	svc := mcnetv1.RemapStatus{Real: "10.96.0.0/12", Global: "100.80.0.0/12", Service: true}
	if got := RemapKernel(remappedSnapshot("east", "100.64.0.0/16", svc, pods)); len(got) != 1 || got[0].Result != OK {
		t.Errorf("kernel as the table: got %+v", got)
	}
	got := RemapKernel(remappedSnapshot("east", "100.64.0.0/16", svc))
	if len(got) != 1 || got[0].Code != "MCN1207" || !strings.Contains(got[0].Message, "does not translate pods 10.244.0.0/16<->100.64.0.0/16") {
		t.Errorf("pod map missing in the kernel: got %+v", got)
	}
	stale := mcnetv1.RemapStatus{Real: "10.244.0.0/16", Global: "100.70.0.0/16"}
	got = RemapKernel(remappedSnapshot("east", "100.64.0.0/16", svc, stale))
	if len(got) != 1 || got[0].Code != "MCN1207" || !strings.Contains(got[0].Message, "translates pods 10.244.0.0/16<->100.70.0.0/16") {
		t.Errorf("stale map in the kernel: got %+v", got)
	}
}

func TestOverlapsOfRemappedClusters(t *testing.T) {
	nets := []Network{
		{Cluster: "east", PodCIDRs: []string{"10.244.0.0/16"}, ServiceCIDRs: []string{"10.96.0.0/12"}, Remapped: true},
		{Cluster: "west", PodCIDRs: []string{"10.244.0.0/16"}, ServiceCIDRs: []string{"10.96.0.0/12"}, Remapped: true},
	}
	if got := Overlaps(nets); len(got) != 1 || got[0].Result != OK || !strings.Contains(got[0].Name, "globalnet remaps (2 pairs") {
		t.Errorf("remapped pair: got %+v", got)
	}
	nets[1].Remapped = false
	if got := Overlaps(nets); len(got) != 2 || got[0].Code != "MCN1201" {
		t.Errorf("one side not remapped: got %+v, want MCN1201 for pods and services", got)
	}
}
