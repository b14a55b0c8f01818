package serviceimport

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"
)

func TestMerge(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	port := func(name string, n int32, proto corev1.Protocol) mcsv1alpha1.ServicePort {
		return mcsv1alpha1.ServicePort{Name: name, Port: n, Protocol: proto}
	}
	ports := func(p ...mcsv1alpha1.ServicePort) []mcsv1alpha1.ServicePort { return p }
	v4 := []corev1.IPFamily{corev1.IPv4Protocol}
	export := func(cluster string, age int, typ mcsv1alpha1.ServiceImportType, p ...mcsv1alpha1.ServicePort) Export {
		return Export{Cluster: cluster, Created: t0.Add(time.Duration(age) * time.Minute), Spec: mcsv1alpha1.ServiceImportSpec{Type: typ, Ports: p, IPFamilies: v4}}
	}
	with := func(e Export, f func(*Export)) Export { f(&e); return e }
	ip := mcsv1alpha1.ClusterSetIP
	const won = "; the oldest export (cluster east, exported 2026-11-27T10:00:00Z) wins"
	// conflict is the Conflict every cluster of the set gets.
	conflict := func(reason, details string, clusters ...string) map[string]string {
		out := map[string]string{}
		for _, c := range clusters {
			out[c] = reason + ": conflicting exports: " + details + won
		}
		return out
	}
	type result struct {
		Spec      mcsv1alpha1.ServiceImportSpec
		Labels    map[string]string
		Clusters  []string
		Ports     map[string][]mcsv1alpha1.ServicePort
		Conflicts map[string]string // cluster: reason: message
	}
	tests := []struct {
		name    string
		exports []Export
		want    result
	}{
		{
			name: "nothing exported",
			want: result{Ports: map[string][]mcsv1alpha1.ServicePort{}, Conflicts: map[string]string{}},
		},
		{
			name:    "identical exports merge without conflict",
			exports: []Export{export("west", 1, ip, port("http", 80, "TCP")), export("east", 0, ip, port("http", 80, "TCP"))},
			want: result{
				Spec:      mcsv1alpha1.ServiceImportSpec{Type: ip, Ports: ports(port("http", 80, "TCP")), IPFamilies: v4},
				Clusters:  []string{"east", "west"},
				Ports:     map[string][]mcsv1alpha1.ServicePort{"east": ports(port("http", 80, "TCP")), "west": ports(port("http", 80, "TCP"))},
				Conflicts: map[string]string{},
			},
		},
		{
			name:    "ports are the union, each served by the clusters that export it; both exports are flagged",
			exports: []Export{export("east", 0, ip, port("http", 80, "TCP")), export("west", 1, ip, port("http", 80, "TCP"), port("metrics", 9090, "SCTP"))},
			want: result{
				Spec:      mcsv1alpha1.ServiceImportSpec{Type: ip, Ports: ports(port("http", 80, "TCP"), port("metrics", 9090, "SCTP")), IPFamilies: v4},
				Clusters:  []string{"east", "west"},
				Ports:     map[string][]mcsv1alpha1.ServicePort{"east": ports(port("http", 80, "TCP")), "west": ports(port("http", 80, "TCP"), port("metrics", 9090, "SCTP"))},
				Conflicts: conflict("PortConflict", "cluster east does not export port metrics 9090/SCTP", "east", "west"),
			},
		},
		{
			name:    "a port contradicting an older export is dropped and flagged on both; the oldest wins",
			exports: []Export{export("west", 5, ip, port("http", 8080, "TCP"), port("dns", 53, "UDP")), export("east", 0, ip, port("http", 80, "TCP"), port("dns", 53, "TCP"))},
			want: result{
				Spec:     mcsv1alpha1.ServiceImportSpec{Type: ip, Ports: ports(port("http", 80, "TCP"), port("dns", 53, "TCP")), IPFamilies: v4},
				Clusters: []string{"east", "west"},
				Ports:    map[string][]mcsv1alpha1.ServicePort{"east": ports(port("http", 80, "TCP"), port("dns", 53, "TCP"))},
				Conflicts: conflict("PortConflict",
					"cluster west exports port http 8080/TCP (imported as port http 80/TCP); cluster west exports port dns 53/UDP (imported as port dns 53/TCP)",
					"east", "west"),
			},
		},
		{
			name:    "the same number under another name conflicts",
			exports: []Export{export("east", 0, ip, port("http", 80, "TCP")), export("west", 1, ip, port("web", 80, "")) /* "" is TCP */},
			want: result{
				Spec:      mcsv1alpha1.ServiceImportSpec{Type: ip, Ports: ports(port("http", 80, "TCP")), IPFamilies: v4},
				Clusters:  []string{"east", "west"},
				Ports:     map[string][]mcsv1alpha1.ServicePort{"east": ports(port("http", 80, "TCP"))},
				Conflicts: conflict("PortConflict", "cluster west exports port web 80/TCP (imported as port http 80/TCP)", "east", "west"),
			},
		},
		{
			name:    "another type is flagged on both and left out of the import",
			exports: []Export{export("east", 0, mcsv1alpha1.Headless, port("cql", 9042, "TCP")), export("west", 1, ip, port("cql", 9042, "TCP"))},
			want: result{
				Spec:      mcsv1alpha1.ServiceImportSpec{Type: mcsv1alpha1.Headless, Ports: ports(port("cql", 9042, "TCP")), IPFamilies: v4},
				Clusters:  []string{"east"},
				Ports:     map[string][]mcsv1alpha1.ServicePort{"east": ports(port("cql", 9042, "TCP"))},
				Conflicts: conflict("TypeConflict", "cluster west exports type ClusterSetIP (left out of the import)", "east", "west"),
			},
		},
		{
			name: "IP families are the union; a difference is an IPFamilyConflict on every export",
			exports: []Export{
				export("east", 0, ip, port("http", 80, "TCP")),
				with(export("west", 1, ip, port("http", 80, "TCP")), func(e *Export) { e.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol} }),
				export("south", 2, ip, port("http", 80, "TCP")),
			},
			want: result{
				Spec:     mcsv1alpha1.ServiceImportSpec{Type: ip, Ports: ports(port("http", 80, "TCP")), IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}},
				Clusters: []string{"east", "south", "west"},
				Ports:    map[string][]mcsv1alpha1.ServicePort{"east": ports(port("http", 80, "TCP")), "south": ports(port("http", 80, "TCP")), "west": ports(port("http", 80, "TCP"))},
				Conflicts: conflict("IPFamilyConflict",
					"cluster east exports IP families IPv4 (imported as IPv4,IPv6); cluster south exports IP families IPv4 (imported as IPv4,IPv6)",
					"east", "south", "west"),
			},
		},
		{
			name: "session affinity, traffic policy and distribution follow the oldest; ties on age go to the first cluster name",
			exports: []Export{
				{Cluster: "west", Created: t0, Spec: mcsv1alpha1.ServiceImportSpec{Type: ip, SessionAffinity: corev1.ServiceAffinityClientIP,
					InternalTrafficPolicy: ptr(corev1.ServiceInternalTrafficPolicyLocal), TrafficDistribution: ptr(corev1.ServiceTrafficDistributionPreferClose)}},
				{Cluster: "east", Created: t0, Spec: mcsv1alpha1.ServiceImportSpec{Type: ip, InternalTrafficPolicy: ptr(corev1.ServiceInternalTrafficPolicyCluster)}},
			},
			want: result{
				Spec:     mcsv1alpha1.ServiceImportSpec{Type: ip, InternalTrafficPolicy: ptr(corev1.ServiceInternalTrafficPolicyCluster)},
				Clusters: []string{"east", "west"},
				Ports:    map[string][]mcsv1alpha1.ServicePort{},
				Conflicts: conflict("SessionAffinityConflict,InternalTrafficPolicyConflict,TrafficDistributionConflict",
					"cluster west exports sessionAffinity ClientIP (imported as None); cluster west exports internalTrafficPolicy Local (imported as Cluster); cluster west exports trafficDistribution PreferClose (imported as unset)",
					"east", "west"),
			},
		},
		{
			name: "exported labels and annotations come from the oldest export; a difference conflicts",
			exports: []Export{
				with(export("east", 0, ip), func(e *Export) {
					e.Labels, e.Annotations = map[string]string{"tier": "db"}, map[string]string{"owner": "team-a"}
				}),
				with(export("west", 1, ip), func(e *Export) {
					e.Labels, e.Annotations = map[string]string{"tier": "cache"}, map[string]string{"owner": "team-a"}
				}),
			},
			want: result{
				Spec:      mcsv1alpha1.ServiceImportSpec{Type: ip, IPFamilies: v4},
				Labels:    map[string]string{"tier": "db"},
				Clusters:  []string{"east", "west"},
				Ports:     map[string][]mcsv1alpha1.ServicePort{},
				Conflicts: conflict("LabelsConflict", "cluster west exports other labels", "east", "west"),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := Merge(tt.exports)
			got := result{Spec: m.Spec, Labels: m.Labels, Clusters: m.Clusters, Ports: m.Ports, Conflicts: map[string]string{}}
			for c, cf := range m.Conflicts {
				got.Conflicts[c] = cf.Reason() + ": " + cf.Message
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Merge (-want +got):\n%s", diff)
			}
		})
	}
}

func TestExportedMetadataRoundTrip(t *testing.T) {
	in := map[string]string{"b": "2", "a": "1"}
	enc := EncodeMap(in)
	if enc != `{"a":"1","b":"2"}` {
		t.Errorf("EncodeMap = %s", enc)
	}
	if diff := cmp.Diff(in, decodeMap(enc)); diff != "" {
		t.Errorf("decodeMap (-want +got):\n%s", diff)
	}
	if EncodeMap(nil) != "" || decodeMap("not json") != nil {
		t.Error("empty or unreadable metadata must count as nothing exported")
	}
}

// TestExportDatesAreTheBrokers gives a broker ServiceImport a publisher-written creation
// annotation dated decades back: conflict order still uses the time the broker's API
// server set.
func TestExportDatesAreTheBrokers(t *testing.T) {
	set := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	si := &mcsv1alpha1.ServiceImport{}
	si.CreationTimestamp = metav1.NewTime(set)
	si.Annotations = map[string]string{"mcnet.io/export-creation-timestamp": "2000-01-01T00:00:00Z"}
	si.Labels = map[string]string{mcsv1alpha1.LabelSourceCluster: "west"}
	if got := ExportFrom(si).Created; !got.Equal(set) {
		t.Errorf("Created = %s, want the broker's creationTimestamp %s", got, set)
	}
}
