package serviceimport

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"
)

func TestMerge(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	port := func(name string, n int32, proto corev1.Protocol) mcsv1alpha1.ServicePort {
		return mcsv1alpha1.ServicePort{Name: name, Port: n, Protocol: proto}
	}
	export := func(cluster string, age int, typ mcsv1alpha1.ServiceImportType, ports ...mcsv1alpha1.ServicePort) Export {
		return Export{Cluster: cluster, Created: t0.Add(time.Duration(age) * time.Minute), Spec: mcsv1alpha1.ServiceImportSpec{Type: typ, Ports: ports, IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol}}}
	}
	ip := mcsv1alpha1.ClusterSetIP
	tests := []struct {
		name    string
		exports []Export
		want    Merged
	}{
		{
			name:    "nothing exported",
			exports: nil,
			want:    Merged{Conflicts: map[string]Conflict{}},
		},
		{
			name:    "identical exports merge without conflict",
			exports: []Export{export("west", 1, ip, port("http", 80, "TCP")), export("east", 0, ip, port("http", 80, "TCP"))},
			want: Merged{
				Spec:      mcsv1alpha1.ServiceImportSpec{Type: ip, Ports: []mcsv1alpha1.ServicePort{port("http", 80, "TCP")}, IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol}},
				Clusters:  []string{"east", "west"},
				Conflicts: map[string]Conflict{},
			},
		},
		{
			name:    "ports are the union; different ports are not a conflict",
			exports: []Export{export("east", 0, ip, port("http", 80, "TCP")), export("west", 1, ip, port("http", 80, "TCP"), port("metrics", 9090, "TCP"))},
			want: Merged{
				Spec:      mcsv1alpha1.ServiceImportSpec{Type: ip, Ports: []mcsv1alpha1.ServicePort{port("http", 80, "TCP"), port("metrics", 9090, "TCP")}, IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol}},
				Clusters:  []string{"east", "west"},
				Conflicts: map[string]Conflict{},
			},
		},
		{
			name:    "a port contradicting an older export is dropped and flagged; the oldest wins",
			exports: []Export{export("west", 5, ip, port("http", 8080, "TCP"), port("dns", 53, "UDP")), export("east", 0, ip, port("http", 80, "TCP"), port("dns", 53, "TCP"))},
			want: Merged{
				Spec:     mcsv1alpha1.ServiceImportSpec{Type: ip, Ports: []mcsv1alpha1.ServicePort{port("http", 80, "TCP"), port("dns", 53, "TCP")}, IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol}},
				Clusters: []string{"east", "west"},
				Conflicts: map[string]Conflict{"west": {
					Reasons: []mcsv1alpha1.ServiceExportConditionReason{mcsv1alpha1.ServiceExportReasonPortConflict, mcsv1alpha1.ServiceExportReasonPortConflict},
					Message: "conflicting port http 8080/TCP (imported as http 80/TCP), port dns 53/UDP (imported as dns 53/TCP): the oldest export (cluster east, exported 2026-11-27T10:00:00Z) wins",
				}},
			},
		},
		{
			name:    "the same number under another name conflicts",
			exports: []Export{export("east", 0, ip, port("http", 80, "TCP")), export("west", 1, ip, port("web", 80, "")) /* "" is TCP */},
			want: Merged{
				Spec:     mcsv1alpha1.ServiceImportSpec{Type: ip, Ports: []mcsv1alpha1.ServicePort{port("http", 80, "TCP")}, IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol}},
				Clusters: []string{"east", "west"},
				Conflicts: map[string]Conflict{"west": {
					Reasons: []mcsv1alpha1.ServiceExportConditionReason{mcsv1alpha1.ServiceExportReasonPortConflict},
					Message: "conflicting port web 80/TCP (imported as http 80/TCP): the oldest export (cluster east, exported 2026-11-27T10:00:00Z) wins",
				}},
			},
		},
		{
			name:    "another type is flagged and left out of the import",
			exports: []Export{export("east", 0, mcsv1alpha1.Headless, port("cql", 9042, "TCP")), export("west", 1, ip, port("cql", 9042, "TCP"))},
			want: Merged{
				Spec:     mcsv1alpha1.ServiceImportSpec{Type: mcsv1alpha1.Headless, Ports: []mcsv1alpha1.ServicePort{port("cql", 9042, "TCP")}, IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol}},
				Clusters: []string{"east"},
				Conflicts: map[string]Conflict{"west": {
					Reasons: []mcsv1alpha1.ServiceExportConditionReason{mcsv1alpha1.ServiceExportReasonTypeConflict},
					Message: "conflicting type ClusterSetIP (imported as Headless): the oldest export (cluster east, exported 2026-11-27T10:00:00Z) wins",
				}},
			},
		},
		{
			name: "session affinity follows the oldest; ties on age go to the first cluster name",
			exports: []Export{
				{Cluster: "west", Created: t0, Spec: mcsv1alpha1.ServiceImportSpec{Type: ip, SessionAffinity: corev1.ServiceAffinityClientIP}},
				{Cluster: "east", Created: t0, Spec: mcsv1alpha1.ServiceImportSpec{Type: ip}},
			},
			want: Merged{
				Spec:     mcsv1alpha1.ServiceImportSpec{Type: ip},
				Clusters: []string{"east", "west"},
				Conflicts: map[string]Conflict{"west": {
					Reasons: []mcsv1alpha1.ServiceExportConditionReason{mcsv1alpha1.ServiceExportReasonSessionAffinityConflict},
					Message: "conflicting sessionAffinity ClientIP (imported as None): the oldest export (cluster east, exported 2026-11-27T10:00:00Z) wins",
				}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Merge(tt.exports)); diff != "" {
				t.Errorf("Merge (-want +got):\n%s", diff)
			}
		})
	}
}
