package network

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPodSlices(t *testing.T) {
	tests := []struct {
		pod   string
		nodes int
		want  []string
	}{
		{"10.10.0.0/16", 2, []string{"10.10.0.0/24", "10.10.1.0/24"}},
		{"10.10.0.0/24", 2, []string{"10.10.0.0/25", "10.10.0.128/25"}},
		{"10.10.0.0/24", 3, []string{"10.10.0.0/26", "10.10.0.64/26", "10.10.0.128/26"}},
		{"10.10.0.0/28", 2, nil}, // too small
	}
	for _, tt := range tests {
		got, err := PodSlices(netip.MustParsePrefix(tt.pod), tt.nodes)
		if tt.want == nil {
			if err == nil {
				t.Errorf("PodSlices(%s, %d): no error, want one", tt.pod, tt.nodes)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var gs []string
		for _, p := range got {
			gs = append(gs, p.String())
		}
		if diff := cmp.Diff(tt.want, gs); diff != "" {
			t.Errorf("PodSlices(%s, %d) (-want +got):\n%s", tt.pod, tt.nodes, diff)
		}
	}
}
