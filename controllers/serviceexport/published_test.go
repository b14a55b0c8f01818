package serviceexport

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"
)

// summary is what a user would check on the broker: slice names and their endpoints.
func summary(slices []*discoveryv1.EndpointSlice) map[string][]string {
	out := map[string][]string{}
	for _, s := range slices {
		for _, ep := range s.Endpoints {
			e := ep.Addresses[0]
			if ep.Hostname != nil {
				e = *ep.Hostname + "=" + e
			}
			if !*ep.Conditions.Ready {
				e += " (not ready)"
			}
			out[s.Name] = append(out[s.Name], e)
		}
	}
	return out
}

func TestPublished(t *testing.T) {
	se := &mcsv1alpha1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "db", CreationTimestamp: metav1.NewTime(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC))}}
	slice := func(fam discoveryv1.AddressType, eps ...discoveryv1.Endpoint) discoveryv1.EndpointSlice {
		return discoveryv1.EndpointSlice{AddressType: fam, Endpoints: eps, Ports: []discoveryv1.EndpointPort{{Name: ptr("pg"), Protocol: ptr(corev1.ProtocolTCP), Port: ptr(int32(15432))}}}
	}
	pod := func(host, addr string, ready bool) discoveryv1.Endpoint {
		ep := discoveryv1.Endpoint{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}, NodeName: ptr("node-1")}
		if host != "" {
			ep.Hostname = &host
		}
		return ep
	}
	svc := func(clusterIPs ...string) *corev1.Service {
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "db"}, Spec: corev1.ServiceSpec{
			Ports: []corev1.ServicePort{{Name: "pg", Protocol: corev1.ProtocolTCP, Port: 5432}}, ClusterIPs: clusterIPs,
		}}
		if len(clusterIPs) > 0 {
			s.Spec.ClusterIP = clusterIPs[0]
		}
		return s
	}
	tests := []struct {
		name  string
		svc   *corev1.Service
		local []discoveryv1.EndpointSlice
		typ   mcsv1alpha1.ServiceImportType
		want  map[string][]string
	}{
		{
			name:  "ClusterSetIP publishes the ClusterIP, ready when a pod is",
			svc:   svc("10.110.0.10"),
			local: []discoveryv1.EndpointSlice{slice(discoveryv1.AddressTypeIPv4, pod("", "10.10.0.5", false), pod("", "10.10.0.6", true))},
			typ:   mcsv1alpha1.ClusterSetIP,
			want:  map[string][]string{"app.db.east.ipv4": {"10.110.0.10"}},
		},
		{
			name:  "no ready pod: the ClusterIP is not ready",
			svc:   svc("10.110.0.10", "fd00:110::10"),
			local: []discoveryv1.EndpointSlice{slice(discoveryv1.AddressTypeIPv4, pod("", "10.10.0.5", false))},
			typ:   mcsv1alpha1.ClusterSetIP,
			want:  map[string][]string{"app.db.east.ipv4": {"10.110.0.10 (not ready)"}, "app.db.east.ipv6": {"fd00:110::10 (not ready)"}},
		},
		{
			name: "headless publishes pods with hostnames, once each, sorted",
			svc:  svc("None"),
			local: []discoveryv1.EndpointSlice{
				slice(discoveryv1.AddressTypeIPv4, pod("db-1", "10.10.0.7", true), pod("db-0", "10.10.0.6", false)),
				slice(discoveryv1.AddressTypeIPv4, pod("db-1", "10.10.0.7", true)),
			},
			typ:  mcsv1alpha1.Headless,
			want: map[string][]string{"app.db.east.ipv4": {"db-0=10.10.0.6 (not ready)", "db-1=10.10.0.7"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			si, slices := Published("east", "mcnet-broker", se, tt.svc, tt.local)
			if si.Name != "app.db.east" || si.Spec.Type != tt.typ || si.Annotations["mcnet.io/export-creation-timestamp"] != "" {
				t.Errorf("ServiceImport %s type %s annotations %v", si.Name, si.Spec.Type, si.Annotations)
			}
			if diff := cmp.Diff(tt.want, summary(slices)); diff != "" {
				t.Errorf("EndpointSlices (-want +got):\n%s", diff)
			}
			for _, s := range slices {
				if s.Labels[discoveryv1.LabelManagedBy] != "controller.mcnet.io" || s.Labels["mcnet.io/cluster"] != "east" || s.Labels[discoveryv1.LabelServiceName] != "" {
					t.Errorf("slice %s labels %v", s.Name, s.Labels)
				}
				for _, ep := range s.Endpoints {
					if ep.NodeName != nil || ep.TargetRef != nil {
						t.Errorf("slice %s carries node or pod references", s.Name)
					}
				}
			}
		})
	}
}
