package serviceexport

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/mcnet-io/mcnet/controllers/serviceimport"
	"github.com/mcnet-io/mcnet/internal/naming"
)

// Published returns what a cluster publishes on the broker for an exported service,
// given the service's local EndpointSlices. Owners are left to the caller.
func Published(clusterID, brokerNamespace string, se *mcsv1alpha1.ServiceExport, svc *corev1.Service, local []discoveryv1.EndpointSlice) (*mcsv1alpha1.ServiceImport, []*discoveryv1.EndpointSlice) {
	name := naming.BrokerName(svc.Namespace, svc.Name, clusterID)
	si := &mcsv1alpha1.ServiceImport{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   brokerNamespace,
			Name:        name,
			Labels:      naming.BrokerLabels(svc.Namespace, svc.Name, clusterID),
			Annotations: map[string]string{},
		},
		Spec: mcsv1alpha1.ServiceImportSpec{
			Type:                  mcsv1alpha1.ClusterSetIP,
			SessionAffinity:       svc.Spec.SessionAffinity,
			SessionAffinityConfig: svc.Spec.SessionAffinityConfig.DeepCopy(),
			IPFamilies:            slices.Clone(svc.Spec.IPFamilies),
			InternalTrafficPolicy: copyPtr(svc.Spec.InternalTrafficPolicy),
			TrafficDistribution:   copyPtr(svc.Spec.TrafficDistribution),
		},
	}
	// Only what the ServiceExport names travels: never the Service's own labels.
	if v := serviceimport.EncodeMap(se.Spec.ExportedLabels); v != "" {
		si.Annotations[naming.AnnotationExportedLabels] = v
	}
	if v := serviceimport.EncodeMap(se.Spec.ExportedAnnotations); v != "" {
		si.Annotations[naming.AnnotationExportedAnnotations] = v
	}
	for _, p := range svc.Spec.Ports {
		si.Spec.Ports = append(si.Spec.Ports, mcsv1alpha1.ServicePort{Name: p.Name, Protocol: p.Protocol, AppProtocol: p.AppProtocol, Port: p.Port})
	}
	headless := svc.Spec.ClusterIP == corev1.ClusterIPNone
	if headless {
		si.Spec.Type = mcsv1alpha1.Headless
	}
	byFamily := map[discoveryv1.AddressType][]discoveryv1.Endpoint{}
	ports := map[discoveryv1.AddressType][]discoveryv1.EndpointPort{}
	if headless {
		podEndpoints(local, byFamily, ports)
	} else {
		ready := anyReady(local)
		for _, ip := range svc.Spec.ClusterIPs {
			a, err := netip.ParseAddr(ip)
			if err != nil {
				continue
			}
			fam := discoveryv1.AddressTypeIPv4
			if a.Is6() {
				fam = discoveryv1.AddressTypeIPv6
			}
			byFamily[fam] = append(byFamily[fam], discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
		}
		for _, p := range svc.Spec.Ports {
			ep := discoveryv1.EndpointPort{Name: ptr(p.Name), Protocol: ptr(p.Protocol), Port: ptr(p.Port), AppProtocol: p.AppProtocol}
			ports[discoveryv1.AddressTypeIPv4] = append(ports[discoveryv1.AddressTypeIPv4], ep)
			ports[discoveryv1.AddressTypeIPv6] = append(ports[discoveryv1.AddressTypeIPv6], ep)
		}
	}
	var out []*discoveryv1.EndpointSlice
	for _, fam := range []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6} {
		eps := byFamily[fam]
		for i := 0; i == 0 || i*maxEndpoints < len(eps); i++ {
			if len(eps) == 0 {
				break
			}
			chunk := eps[i*maxEndpoints : min(len(eps), (i+1)*maxEndpoints)]
			n := name + "." + strings.ToLower(string(fam))
			if i > 0 {
				n += "-" + strconv.Itoa(i)
			}
			labels := naming.BrokerLabels(svc.Namespace, svc.Name, clusterID)
			labels[discoveryv1.LabelManagedBy] = naming.SliceManagedBy
			labels[naming.NoProxyLabel] = "" // the broker may be a member cluster
			out = append(out, &discoveryv1.EndpointSlice{
				ObjectMeta:  metav1.ObjectMeta{Namespace: brokerNamespace, Name: n, Labels: labels},
				AddressType: fam,
				Endpoints:   chunk,
				Ports:       ports[fam],
			})
		}
	}
	return si, out
}

// anyReady says whether a service has a ready endpoint; a missing condition means ready.
func anyReady(local []discoveryv1.EndpointSlice) bool {
	for _, s := range local {
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				return true
			}
		}
	}
	return false
}

// podEndpoints collects a headless service's pods by address family, once each, in a
// stable order, with the ports of each family.
func podEndpoints(local []discoveryv1.EndpointSlice, byFamily map[discoveryv1.AddressType][]discoveryv1.Endpoint, ports map[discoveryv1.AddressType][]discoveryv1.EndpointPort) {
	seen := map[string]bool{}
	for _, s := range local {
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		for _, p := range s.Ports {
			if !slices.ContainsFunc(ports[s.AddressType], func(q discoveryv1.EndpointPort) bool {
				return equality.Semantic.DeepEqual(p.Name, q.Name) && equality.Semantic.DeepEqual(p.Protocol, q.Protocol)
			}) {
				ports[s.AddressType] = append(ports[s.AddressType], p)
			}
		}
		for _, ep := range s.Endpoints {
			if len(ep.Addresses) == 0 || seen[ep.Addresses[0]] {
				continue
			}
			seen[ep.Addresses[0]] = true
			ready := ep.Conditions.Ready == nil || *ep.Conditions.Ready
			byFamily[s.AddressType] = append(byFamily[s.AddressType], discoveryv1.Endpoint{
				Addresses:  ep.Addresses,
				Hostname:   ep.Hostname,
				Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: ep.Conditions.Serving, Terminating: ep.Conditions.Terminating},
			})
		}
	}
	for fam := range byFamily {
		slices.SortFunc(byFamily[fam], func(a, b discoveryv1.Endpoint) int {
			return cmp.Compare(a.Addresses[0], b.Addresses[0])
		})
	}
	for fam := range ports {
		slices.SortFunc(ports[fam], func(a, b discoveryv1.EndpointPort) int {
			return cmp.Compare(deref(a.Name), deref(b.Name))
		})
	}
}

func ptr[T any](v T) *T { return &v }

func copyPtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
