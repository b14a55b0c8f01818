package serviceimport

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/mcnet-io/mcnet/internal/clusterhealth"
)

func TestChoose(t *testing.T) {
	tcp := mcsv1alpha1.ServicePort{Name: "tcp", Protocol: "TCP", Port: 42}
	tcp2 := mcsv1alpha1.ServicePort{Name: "tcp2", Protocol: "TCP", Port: 4242}
	ms := time.Millisecond
	all := func(p ...mcsv1alpha1.ServicePort) []mcsv1alpha1.ServicePort { return p }
	tests := []struct {
		name   string
		ports  []mcsv1alpha1.ServicePort
		served map[string][]mcsv1alpha1.ServicePort
		ready  map[string]bool
		health map[string]clusterhealth.Health
		want   map[string][]mcsv1alpha1.ServicePort
	}{
		{
			name:   "the local cluster takes what it serves with ready endpoints",
			ports:  all(tcp),
			served: map[string][]mcsv1alpha1.ServicePort{"hub": all(tcp), "east": all(tcp)},
			ready:  map[string]bool{"hub": true, "east": true},
			health: map[string]clusterhealth.Health{"east": {Connected: true, RTT: ms}},
			want:   map[string][]mcsv1alpha1.ServicePort{"hub": all(tcp)},
		},
		{
			name:   "without ready local endpoints, the connected remote clusters within twice the nearest RTT",
			ports:  all(tcp),
			served: map[string][]mcsv1alpha1.ServicePort{"hub": all(tcp), "east": all(tcp), "west": all(tcp), "south": all(tcp), "north": all(tcp)},
			ready:  map[string]bool{"hub": false, "east": true, "west": true, "south": true, "north": true},
			health: map[string]clusterhealth.Health{
				"east":  {Connected: true, RTT: 2 * ms},
				"west":  {Connected: true, RTT: 3 * ms},
				"south": {Connected: true, RTT: 9 * ms}, // too far
				"north": {Connected: false, RTT: ms},    // tunnel down: never
			},
			want: map[string][]mcsv1alpha1.ServicePort{"east": all(tcp), "west": all(tcp)},
		},
		{
			name:   "sub-millisecond differences are noise: within a millisecond of the nearest counts as near",
			ports:  all(tcp),
			served: map[string][]mcsv1alpha1.ServicePort{"east": all(tcp), "west": all(tcp), "south": all(tcp)},
			ready:  map[string]bool{"east": true, "west": true, "south": true},
			health: map[string]clusterhealth.Health{"east": {Connected: true, RTT: 150 * time.Microsecond}, "west": {Connected: true, RTT: 900 * time.Microsecond}, "south": {Connected: true, RTT: 1300 * time.Microsecond}},
			want:   map[string][]mcsv1alpha1.ServicePort{"east": all(tcp), "west": all(tcp)},
		},
		{
			name:   "an RTT not measured yet counts as the slowest measured",
			ports:  all(tcp),
			served: map[string][]mcsv1alpha1.ServicePort{"east": all(tcp), "west": all(tcp), "south": all(tcp)},
			ready:  map[string]bool{"east": true, "west": true, "south": true},
			health: map[string]clusterhealth.Health{"east": {Connected: true, RTT: ms}, "west": {Connected: true, RTT: 5 * ms}, "south": {Connected: true}},
			want:   map[string][]mcsv1alpha1.ServicePort{"east": all(tcp)},
		},
		{
			name:   "each port goes only to the clusters that serve it",
			ports:  all(tcp, tcp2),
			served: map[string][]mcsv1alpha1.ServicePort{"hub": all(tcp), "east": all(tcp2)},
			ready:  map[string]bool{"hub": true, "east": true},
			health: map[string]clusterhealth.Health{"east": {Connected: true, RTT: ms}},
			want:   map[string][]mcsv1alpha1.ServicePort{"hub": all(tcp), "east": all(tcp2)},
		},
		{
			name:   "nobody reachable: no endpoints",
			ports:  all(tcp),
			served: map[string][]mcsv1alpha1.ServicePort{"east": all(tcp)},
			ready:  map[string]bool{"east": true},
			health: map[string]clusterhealth.Health{},
			want:   map[string][]mcsv1alpha1.ServicePort{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Choose(tt.ports, tt.served, tt.ready, "hub", tt.health)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Choose (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDerivedName(t *testing.T) {
	a, b := DerivedName("hello"), DerivedName("a-service-name-that-is-long-enough-to-fill-a-whole-dns-label-xyz")
	if a == b || len(a) != 16 || len(b) != 16 || a != DerivedName("hello") {
		t.Errorf("DerivedName: %q, %q", a, b)
	}
}
