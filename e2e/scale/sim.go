package scale

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/controllers/brokersync"
	"github.com/mcnet-io/mcnet/controllers/serviceexport"
	"github.com/mcnet-io/mcnet/dataplane"
	"github.com/mcnet-io/mcnet/internal/agent"
	"github.com/mcnet-io/mcnet/internal/naming"
)

// Services is how many services every simulated member exports; ExportNamespace holds
// them. Every member exports the same names, so each import has N-1 exporters.
const (
	Services        = 10
	ExportNamespace = "app"
)

// Sim is one simulated member: it writes to the broker, with its own broker identity,
// the objects a real member's controller publishes there, built by the same functions.
type Sim struct {
	// Index is the member's position among the simulated ones (1-based).
	Index int
	Name  string
	Pod   netip.Prefix
	Svc   netip.Prefix
	// Client writes as the member's ServiceAccount on the broker.
	Client    client.Client
	Namespace string
	Owner     *metav1.OwnerReference

	// Key is the current WireGuard public key (base64); Gateway the current public
	// address; flips counts gateway changes.
	Key     string
	Gateway netip.Addr
	flips   int
}

// SimName is the name of simulated member i.
func SimName(i int) string { return fmt.Sprintf("s%04d", i) }

// SimPod is member i's pod allocation: a /20 of 10.128.0.0/9.
func SimPod(i int) netip.Prefix {
	base := netip.MustParseAddr("10.128.0.0").As4()
	v := uint32(base[0])<<24 | uint32(base[1])<<16 + uint32(i)<<12
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), 20)
}

// SimSvc is member i's service allocation: a /22 of 10.64.0.0/10.
func SimSvc(i int) netip.Prefix {
	v := uint32(10)<<24 | uint32(64)<<16 + uint32(i)<<10
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), 22)
}

// SimGateway is a gateway address of member i on the lab's WAN (198.19.128.0/17, out of
// the lab's own range): alt picks one of two gateways, so churn moves between them.
func SimGateway(i int, alt bool) netip.Addr {
	third := 128 + i/250
	if alt {
		third += 64
	}
	return netip.AddrFrom4([4]byte{198, 19, byte(third), byte(i%250 + 1)})
}

// NewKey returns a fresh WireGuard public key, base64 as an Endpoint carries it.
func NewKey() string {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return base64.StdEncoding.EncodeToString(k.PublicKey().Bytes())
}

func (s *Sim) local() agent.Local {
	return agent.Local{ClusterID: s.Name, Cable: mcnetv1.CableWireGuard, CablePort: dataplane.DefaultWireGuardPort, CIDRs: []netip.Prefix{s.Pod, s.Svc}}
}

// endpoint is the member's Endpoint as its gateway publishes it and its controller
// copies it to the broker.
func (s *Sim) endpoint() *mcnetv1.Endpoint {
	spec := agent.LocalEndpoint(s.local(), fmt.Sprintf("gw%d", s.flips%2), agent.NodeAddrs{
		Private:     []netip.Addr{s.Gateway},
		HealthCheck: []netip.Addr{s.Pod.Addr().Next()},
	}, mustKey(s.Key))
	return &mcnetv1.Endpoint{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name, Labels: syncLabels(s.Name), OwnerReferences: s.owners()},
		Spec:       spec,
	}
}

func (s *Sim) owners() []metav1.OwnerReference {
	if s.Owner == nil {
		return nil
	}
	return []metav1.OwnerReference{*s.Owner}
}

// syncLabels are what brokersync puts on a published copy.
func syncLabels(cluster string) map[string]string {
	return map[string]string{mcnetv1.ClusterLabel: cluster, naming.ManagedByLabel: naming.ManagedBy}
}

// Join publishes the member's Cluster, Endpoint and exports.
func (s *Sim) Join(ctx context.Context) error {
	cl := brokersync.LocalCluster(s.Namespace, mcnetv1.ClusterObjSpec{
		ClusterID: s.Name, PodCIDRs: []string{s.Pod.String()}, ServiceCIDRs: []string{s.Svc.String()},
		Cable: mcnetv1.CableWireGuard, Version: "scale",
	})
	cl.Labels = syncLabels(s.Name)
	cl.OwnerReferences = s.owners()
	if s.Key == "" {
		s.Key, s.Gateway = NewKey(), SimGateway(s.Index, false)
	}
	objs := []client.Object{cl, s.endpoint()}
	for j := range Services {
		si, slices := s.export(j, 0)
		objs = append(objs, si)
		for _, sl := range slices {
			objs = append(objs, sl)
		}
	}
	for _, o := range objs {
		if err := s.Client.Create(ctx, o); err != nil {
			return fmt.Errorf("member %s: create %T %s: %w", s.Name, o, o.GetName(), err)
		}
	}
	return nil
}

// export builds the broker objects of service j with serviceexport.Published, the
// function the real controller publishes with; gen varies the pods behind it.
func (s *Sim) export(j, gen int) (*mcsv1alpha1.ServiceImport, []*discoveryv1.EndpointSlice) {
	name := fmt.Sprintf("svc-%d", j)
	svcIP := s.Svc.Addr()
	for range j + 10 {
		svcIP = svcIP.Next()
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ExportNamespace, Name: name},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP, ClusterIP: svcIP.String(), ClusterIPs: []string{svcIP.String()},
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}},
		},
	}
	se := &mcsv1alpha1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ExportNamespace, Name: name}}
	port, proto, pname, ready := int32(8080), corev1.ProtocolTCP, "http", true
	local := discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ExportNamespace, Name: name + "-abc", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &pname, Port: &port, Protocol: &proto}},
	}
	pod := s.Pod.Addr()
	for range 16*j + gen%8 + 2 {
		pod = pod.Next()
	}
	for k := range 3 {
		a := pod
		for range k {
			a = a.Next()
		}
		local.Endpoints = append(local.Endpoints, discoveryv1.Endpoint{Addresses: []string{a.String()}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
	}
	si, slices := serviceexport.Published(s.Name, s.Namespace, se, svc, []discoveryv1.EndpointSlice{local})
	si.OwnerReferences = s.owners()
	for _, sl := range slices {
		sl.OwnerReferences = s.owners()
	}
	return si, slices
}

// MoveGateway is an Endpoint change: the member's gateway fails over to its other node,
// which has another address; with newKey it also has its own key.
func (s *Sim) MoveGateway(ctx context.Context, newKey bool) error {
	s.flips++
	s.Gateway = SimGateway(s.Index, s.flips%2 == 1)
	if newKey {
		s.Key = NewKey()
	}
	want := s.endpoint()
	var have mcnetv1.Endpoint
	if err := s.Client.Get(ctx, client.ObjectKeyFromObject(want), &have); err != nil {
		return err
	}
	have.Spec = want.Spec
	return s.Client.Update(ctx, &have)
}

// ChurnService changes the pods behind one of the member's exports, as its controller
// republishes the EndpointSlice when a pod is replaced.
func (s *Sim) ChurnService(ctx context.Context, j, gen int) error {
	_, slices := s.export(j, gen)
	for _, want := range slices {
		var have discoveryv1.EndpointSlice
		if err := s.Client.Get(ctx, client.ObjectKeyFromObject(want), &have); err != nil {
			return err
		}
		have.Endpoints = want.Endpoints
		if err := s.Client.Update(ctx, &have); err != nil {
			return err
		}
	}
	return nil
}

func mustKey(s string) (k dataplane.Key) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != 32 {
		panic(fmt.Sprintf("bad key %q", s))
	}
	copy(k[:], b)
	return k
}
