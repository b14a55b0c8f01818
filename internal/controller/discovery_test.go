package controller_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/controllers/serviceimport"
	"github.com/mcnet-io/mcnet/internal/agentconfig"
	"github.com/mcnet-io/mcnet/internal/controller"
	"github.com/mcnet-io/mcnet/internal/diagnose"
	"github.com/mcnet-io/mcnet/internal/testenv"
)

// freeAddr returns a loopback address whose port is free for UDP and TCP.
func freeAddr(t testing.TB) string {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := pc.LocalAddr().String()
		l, err := net.Listen("tcp", addr)
		pc.Close()
		if err == nil {
			l.Close()
			return addr
		}
	}
	t.Fatal("no free port")
	return ""
}

// fleetEnv is three clusters with their real controllers, DNS servers on loopback.
type fleetEnv struct {
	set     *mcnetv1.ClusterSet
	members map[string]*member
	broker  client.Client
	ns      string
}

// cluster returns the fleet's spec of a member.
func (f *fleetEnv) cluster(name string) *mcnetv1.ClusterSpec {
	for i := range f.set.Spec.Clusters {
		if f.set.Spec.Clusters[i].Name == name {
			return &f.set.Spec.Clusters[i]
		}
	}
	return nil
}

func startFleet(t testing.TB) *fleetEnv {
	t.Helper()
	ctx := t.Context()
	fl := testenv.InstallFleet(ctx, t, "../../kustomize/testdata/fleet.yaml")
	cs := fl.Set
	dir := t.TempDir()
	f := &fleetEnv{set: cs, members: map[string]*member{}, broker: testenv.Client(t, fl.Broker), ns: cs.Spec.Broker.Namespace}
	for _, c := range cs.Spec.Clusters {
		local, broker := fl.ControllerKubeconfigs(ctx, t, dir, c.Name)
		cfg := fl.Configs[c.Name]
		m := &member{name: c.Name, cfg: cfg, client: testenv.Client(t, cfg), opts: controller.Options{
			Process: agentconfig.Process{Kubeconfig: local, Namespace: mcnetv1.SystemNamespace},
			Config:  fl.AgentConfig(t, c.Name), BrokerKubeconfig: broker,
			MetricsAddress: "0", ProbeAddress: "0", LeaderElect: true,
		}, dns: &controller.DNSOptions{
			Process: agentconfig.Process{Kubeconfig: local, Namespace: mcnetv1.SystemNamespace},
			Config:  fl.AgentConfig(t, c.Name), BindAddress: freeAddr(t), MetricsAddress: "0", ProbeAddress: "0",
		}}
		f.members[c.Name] = m
		m.startTB(ctx, t)
	}
	t.Cleanup(func() {
		for _, m := range f.members {
			m.haltTB(t)
		}
	})
	return f
}

// startTB is start for tests and benchmarks; benchmarks discard the controllers' logs
// unless MCNET_BENCH_LOG is set.
func (m *member) startTB(ctx context.Context, t testing.TB) {
	t.Helper()
	ctx, m.stop = context.WithCancel(ctx)
	m.done = make(chan error, 1)
	logger := logr.Discard()
	if os.Getenv("MCNET_BENCH_LOG") != "" {
		logger = zap.New(zap.UseDevMode(true), zap.WriteTo(os.Stderr)).WithName(m.name)
	}
	if tt, ok := t.(*testing.T); ok {
		logger = zap.New(zap.UseDevMode(true), zap.WriteTo(testWriter{tt, m.name}))
	}
	go func() { m.done <- controller.Run(log.IntoContext(ctx, logger), m.opts) }()
	if m.dns != nil {
		m.dnsDone = make(chan error, 1)
		go func() { m.dnsDone <- controller.RunDNS(log.IntoContext(ctx, logger.WithName("dns")), *m.dns) }()
	}
}

func (m *member) haltTB(t testing.TB) {
	t.Helper()
	m.stop()
	select {
	case err := <-m.done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("%s controller: %v", m.name, err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("%s controller did not stop", m.name)
	}
	if m.dnsDone == nil {
		return
	}
	select {
	case err := <-m.dnsDone:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("%s DNS: %v", m.name, err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("%s DNS did not stop", m.name)
	}
}

// resolve asks m's DNS server over UDP; it returns the rcode and the answers' addresses.
func (m *member) resolve(name string, qtype uint16) (int, []string, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Timeout: time.Second}
	resp, _, err := c.Exchange(q, m.dns.BindAddress)
	if err != nil {
		return 0, nil, err
	}
	var out []string
	for _, rr := range resp.Answer {
		switch r := rr.(type) {
		case *dns.A:
			out = append(out, r.A.String())
		case *dns.AAAA:
			out = append(out, r.AAAA.String())
		case *dns.SRV:
			out = append(out, fmt.Sprintf("%d %s", r.Port, r.Target))
		}
	}
	slices.Sort(out)
	return resp.Rcode, out, nil
}

func answers(m *member, name string, qtype uint16, want ...string) func(context.Context) error {
	return func(context.Context) error {
		rcode, got, err := m.resolve(name, qtype)
		if err != nil {
			return err
		}
		if want == nil {
			if rcode != dns.RcodeNameError {
				return fmt.Errorf("%s: %s %v, want NXDOMAIN", name, dns.RcodeToString[rcode], got)
			}
			return nil
		}
		if rcode != dns.RcodeSuccess || !slices.Equal(got, want) {
			return fmt.Errorf("%s: %s %v, want %v", name, dns.RcodeToString[rcode], got, want)
		}
		return nil
	}
}

func answersOneOf(m *member, name string, options ...string) func(context.Context) error {
	return func(context.Context) error {
		rcode, got, err := m.resolve(name, dns.TypeA)
		if err != nil {
			return err
		}
		if rcode != dns.RcodeSuccess || len(got) != 1 || !slices.Contains(options, got[0]) {
			return fmt.Errorf("%s: %s %v, want one of %v", name, dns.RcodeToString[rcode], got, options)
		}
		return nil
	}
}

// exportService creates namespace, Service, its EndpointSlice (no kube-controller-manager
// here) and ServiceExport; it returns the ClusterIP.
func exportService(ctx context.Context, t testing.TB, c client.Client, ns, name string, ports []corev1.ServicePort, export bool) string {
	t.Helper()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{Ports: ports, Selector: map[string]string{"app": name}}}
	if err := c.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	ready := true
	var eps []discoveryv1.EndpointPort
	for _, p := range ports {
		eps = append(eps, discoveryv1.EndpointPort{Name: &p.Name, Protocol: &p.Protocol, Port: &p.Port})
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name + "-abcde", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.250.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       eps,
	}
	if err := c.Create(ctx, slice); err != nil {
		t.Fatal(err)
	}
	if export {
		if err := c.Create(ctx, &mcsv1alpha1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}); err != nil {
			t.Fatal(err)
		}
	}
	return svc.Spec.ClusterIP
}

// setGateway writes the local active Gateway's view of the other clusters.
func setGateway(ctx context.Context, t testing.TB, c client.Client, conns map[string]time.Duration) {
	t.Helper()
	gw := &mcnetv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: mcnetv1.SystemNamespace, Name: "gw-0"}}
	if err := c.Get(ctx, client.ObjectKeyFromObject(gw), gw); apierrors.IsNotFound(err) {
		if err := c.Create(ctx, gw); err != nil {
			t.Fatal(err)
		}
	} else if err != nil {
		t.Fatal(err)
	}
	gw.Status = mcnetv1.GatewayStatus{HAStatus: mcnetv1.HAActive}
	names := make([]string, 0, len(conns))
	for n := range conns {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		st := mcnetv1.Connected
		if conns[n] < 0 {
			st = mcnetv1.ConnectionError
		}
		gw.Status.Connections = append(gw.Status.Connections, mcnetv1.Connection{Cluster: n, Status: st, RTT: &mcnetv1.RTTStats{Avg: metav1.Duration{Duration: conns[n]}}})
	}
	if err := c.Status().Update(ctx, gw); err != nil {
		t.Fatal(err)
	}
}

func condition(ctx context.Context, c client.Client, ns, name string, typ mcsv1alpha1.ServiceExportConditionType, status metav1.ConditionStatus, reason string) func(context.Context) error {
	return func(context.Context) error {
		var se mcsv1alpha1.ServiceExport
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &se); err != nil {
			return err
		}
		cond := meta.FindStatusCondition(se.Status.Conditions, string(typ))
		if cond == nil || cond.Status != status || cond.Reason != reason {
			return fmt.Errorf("%s is %+v, want %s/%s", typ, cond, status, reason)
		}
		return nil
	}
}

// eventOn checks that an Event of the given type and reason regards the ServiceExport.
func eventOn(c client.Client, ns, name, typ, reason string) func(context.Context) error {
	return func(ctx context.Context) error {
		var evs corev1.EventList
		if err := c.List(ctx, &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		var seen []string
		for _, e := range evs.Items {
			if e.InvolvedObject.Kind != "ServiceExport" || e.InvolvedObject.Name != name {
				continue
			}
			if e.Type == typ && e.Reason == reason && e.Message != "" {
				return nil
			}
			seen = append(seen, e.Type+"/"+e.Reason)
		}
		return fmt.Errorf("no %s/%s Event on ServiceExport %s/%s; seen %v", typ, reason, ns, name, seen)
	}
}

func importOf(c client.Client, ns, name string, clusters ...string) func(context.Context) error {
	return func(ctx context.Context) error {
		var si mcsv1alpha1.ServiceImport
		err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &si)
		var slices discoveryv1.EndpointSliceList
		if lerr := c.List(ctx, &slices, client.InNamespace(ns), client.MatchingLabels{mcsv1alpha1.LabelServiceName: name}); lerr != nil {
			return lerr
		}
		var sources []string
		for _, s := range slices.Items {
			sources = append(sources, s.Labels[mcsv1alpha1.LabelSourceCluster])
		}
		if clusters == nil {
			if !apierrors.IsNotFound(err) || len(sources) > 0 {
				return fmt.Errorf("import still there (%v), slices from %v", err, sources)
			}
			return nil
		}
		if err != nil {
			return err
		}
		var got []string
		for _, c := range si.Status.Clusters {
			got = append(got, c.Cluster)
		}
		if !slicesEqual(got, clusters) || !slicesEqual(sorted(sources), clusters) {
			return fmt.Errorf("import lists clusters %v with slices from %v, want %v", got, sources, clusters)
		}
		return nil
	}
}

// clusterSetIP returns the VIP of a ClusterSetIP import, once the import records it and
// it is the ClusterIP of its derived Service.
func clusterSetIP(ctx context.Context, t testing.TB, m *member, ns, name string) string {
	t.Helper()
	var vip string
	testenv.Eventually(ctx, t, 20*time.Second, m.name+" allocates the ClusterSetIP of "+ns+"/"+name, func(ctx context.Context) error {
		var si mcsv1alpha1.ServiceImport
		if err := m.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &si); err != nil {
			return err
		}
		if len(si.Spec.IPs) == 0 || len(si.Spec.IPs) != len(si.Spec.IPFamilies) {
			return fmt.Errorf("ips %v for families %v", si.Spec.IPs, si.Spec.IPFamilies)
		}
		var svc corev1.Service
		if err := m.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: serviceimport.DerivedName(name)}, &svc); err != nil {
			return err
		}
		if !slices.Equal(svc.Spec.ClusterIPs, si.Spec.IPs) {
			return fmt.Errorf("derived Service has ClusterIPs %v, the import %v", svc.Spec.ClusterIPs, si.Spec.IPs)
		}
		ready := meta.FindStatusCondition(si.Status.Conditions, string(mcsv1alpha1.ServiceImportConditionReady))
		if ready == nil || ready.Status != metav1.ConditionTrue {
			return fmt.Errorf("Ready %+v", ready)
		}
		vip = si.Spec.IPs[0]
		return nil
	})
	return vip
}

// vipLeadsTo checks where a ClusterSetIP's traffic goes: the cluster=address pairs and
// ports of its derived Service's EndpointSlices, which kube-proxy programs.
func vipLeadsTo(m *member, ns, name string, want ...string) func(context.Context) error {
	return func(ctx context.Context) error {
		var list discoveryv1.EndpointSliceList
		if err := m.client.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{discoveryv1.LabelServiceName: serviceimport.DerivedName(name)}); err != nil {
			return err
		}
		var got []string
		for _, s := range list.Items {
			cluster := strings.Split(s.Name, ".")[1]
			for _, ep := range s.Endpoints {
				for _, p := range s.Ports {
					got = append(got, fmt.Sprintf("%s=%s:%d", cluster, ep.Addresses[0], *p.Port))
				}
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, sorted(want)) {
			return fmt.Errorf("%s's ClusterSetIP of %s/%s leads to %v, want %v", m.name, ns, name, got, want)
		}
		return nil
	}
}

func slicesEqual(a, b []string) bool { return slices.Equal(a, b) }

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// TestDiscovery exports services in real clusters and follows them through the broker
// into the other clusters' ServiceImports, EndpointSlices and DNS answers.
func TestDiscovery(t *testing.T) {
	ctx := t.Context()
	f := startFleet(t)
	hub, east, west := f.members["hub"], f.members["east"], f.members["west"]
	pg := []corev1.ServicePort{{Name: "pg", Protocol: corev1.ProtocolTCP, Port: 5432}}
	const wait = 20 * time.Second

	// hub's gateway reaches both clusters; east is closer.
	setGateway(ctx, t, hub.client, map[string]time.Duration{"east": time.Millisecond, "west": 3 * time.Millisecond})

	var eastIP, westIP, hubVIP string
	var eastPublished types.UID // east's broker ServiceImport, which must never be churned
	t.Run("an export in two clusters is imported everywhere, and resolves", func(t *testing.T) {
		eastIP = exportService(ctx, t, east.client, "app", "db", pg, true)
		testenv.Eventually(ctx, t, wait, "east's export is ready", condition(ctx, east.client, "app", "db", mcsv1alpha1.ServiceExportConditionReady, metav1.ConditionTrue, "Exported"))
		testenv.Eventually(ctx, t, wait, "an Exported Event", eventOn(east.client, "app", "db", corev1.EventTypeNormal, "Exported"))
		westIP = exportService(ctx, t, west.client, "app", "db", pg, true)
		// The namespace appears in hub only now: the import follows it.
		if err := hub.client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "app"}}); err != nil {
			t.Fatal(err)
		}
		for _, m := range f.members {
			testenv.Eventually(ctx, t, wait, m.name+" imports app/db from east and west", importOf(m.client, "app", "db", "east", "west"))
		}
		testenv.Eventually(ctx, t, wait, "west's export has no conflict", condition(ctx, west.client, "app", "db", mcsv1alpha1.ServiceExportConditionConflict, metav1.ConditionFalse, "NoConflicts"))
		hubVIP = clusterSetIP(ctx, t, hub, "app", "db")
		testenv.Eventually(ctx, t, wait, "hub resolves db to its ClusterSetIP", answers(hub, "db.app.svc.clusterset.local", dns.TypeA, hubVIP))
		// hub has no copy of its own: the VIP leads to east, the nearer cluster (west's
		// 3 ms is more than twice east's 1 ms), at its ClusterIP.
		testenv.Eventually(ctx, t, wait, "hub's ClusterSetIP leads to east", vipLeadsTo(hub, "app", "db", "east="+eastIP+":5432"))
		testenv.Eventually(ctx, t, wait, "hub resolves east.db", answers(hub, "east.db.app.svc.clusterset.local", dns.TypeA, eastIP))
		testenv.Eventually(ctx, t, wait, "hub resolves west.db", answers(hub, "west.db.app.svc.clusterset.local", dns.TypeA, westIP))
		testenv.Eventually(ctx, t, wait, "hub resolves the SRV", answers(hub, "_pg._tcp.db.app.svc.clusterset.local", dns.TypeSRV, "5432 db.app.svc.clusterset.local."))
		// The broker lives on hub's API server: hub's importer must leave it alone.
		var published mcsv1alpha1.ServiceImport
		if err := f.broker.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "app.db.east"}, &published); err != nil {
			t.Fatal(err)
		}
		eastPublished = published.UID
		var strays mcsv1alpha1.ServiceImportList
		if err := hub.client.List(ctx, &strays, client.InNamespace(f.ns), client.MatchingLabels{mcsv1alpha1.LabelServiceName: "app.db.east"}); err != nil || len(strays.Items) > 0 {
			t.Errorf("hub imported a broker object as a service: %v %v", strays.Items, err)
		}
		// east has ready endpoints of its own: its own pods take its ClusterSetIP's
		// traffic, whatever the gateways say.
		eastVIP := clusterSetIP(ctx, t, east, "app", "db")
		testenv.Eventually(ctx, t, wait, "east resolves db to its ClusterSetIP", answers(east, "db.app.svc.clusterset.local", dns.TypeA, eastVIP))
		testenv.Eventually(ctx, t, wait, "east's ClusterSetIP leads to its own pod", vipLeadsTo(east, "app", "db", "east=10.250.0.1:5432"))
	})

	t.Run("the rendered CoreDNS server block forwards the domain to mcnet-dns", func(t *testing.T) {
		for _, m := range f.members {
			c := f.cluster(m.name)
			var svc corev1.Service
			if err := m.client.Get(ctx, client.ObjectKey{Namespace: mcnetv1.SystemNamespace, Name: mcnetv1.DNSServiceName}, &svc); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(svc.Spec.ClusterIPs, c.DNSServiceIPs) {
				t.Errorf("%s: Service %s has ClusterIPs %v, want the fleet's dnsServiceIPs %v", m.name, mcnetv1.DNSServiceName, svc.Spec.ClusterIPs, c.DNSServiceIPs)
			}
			var cm corev1.ConfigMap
			if err := m.client.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: mcnetv1.CoreDNSConfigMap}, &cm); err != nil {
				t.Fatal(err)
			}
			block := cm.Data[mcnetv1.CoreDNSServerKey]
			if !diagnose.ForwardsDomain(block, "clusterset.local", svc.Spec.ClusterIP) {
				t.Errorf("%s: the server block does not forward clusterset.local to %s:\n%s", m.name, svc.Spec.ClusterIP, block)
			}
		}
	})

	t.Run("a disconnected cluster drops out of answers", func(t *testing.T) {
		setGateway(ctx, t, hub.client, map[string]time.Duration{"east": -1, "west": 3 * time.Millisecond})
		testenv.Eventually(ctx, t, wait, "the ClusterSetIP leads to west only", vipLeadsTo(hub, "app", "db", "west="+westIP+":5432"))
		testenv.Eventually(ctx, t, wait, "the name still answers the same ClusterSetIP", answers(hub, "db.app.svc.clusterset.local", dns.TypeA, hubVIP))
		setGateway(ctx, t, hub.client, map[string]time.Duration{"east": time.Millisecond, "west": 3 * time.Millisecond})
		testenv.Eventually(ctx, t, wait, "east is back", vipLeadsTo(hub, "app", "db", "east="+eastIP+":5432"))
	})

	t.Run("a conflicting port is flagged on both exports and the younger one's port left out", func(t *testing.T) {
		exportService(ctx, t, east.client, "app", "cache", []corev1.ServicePort{{Name: "redis", Protocol: corev1.ProtocolTCP, Port: 6379}}, true)
		testenv.Eventually(ctx, t, wait, "east's cache export is ready", condition(ctx, east.client, "app", "cache", mcsv1alpha1.ServiceExportConditionReady, metav1.ConditionTrue, "Exported"))
		exportService(ctx, t, west.client, "app", "cache", []corev1.ServicePort{{Name: "redis", Protocol: corev1.ProtocolTCP, Port: 6380}}, true)
		testenv.Eventually(ctx, t, wait, "west's export has a port conflict", condition(ctx, west.client, "app", "cache", mcsv1alpha1.ServiceExportConditionConflict, metav1.ConditionTrue, "PortConflict"))
		testenv.Eventually(ctx, t, wait, "east's export has it too", condition(ctx, east.client, "app", "cache", mcsv1alpha1.ServiceExportConditionConflict, metav1.ConditionTrue, "PortConflict"))
		testenv.Eventually(ctx, t, wait, "a PortConflict Warning on west's export", eventOn(west.client, "app", "cache", corev1.EventTypeWarning, "PortConflict"))
		testenv.Eventually(ctx, t, wait, "a PortConflict Warning on east's export", eventOn(east.client, "app", "cache", corev1.EventTypeWarning, "PortConflict"))
		testenv.Eventually(ctx, t, wait, "hub imports the oldest port", func(ctx context.Context) error {
			var si mcsv1alpha1.ServiceImport
			if err := hub.client.Get(ctx, client.ObjectKey{Namespace: "app", Name: "cache"}, &si); err != nil {
				return err
			}
			if len(si.Spec.Ports) != 1 || si.Spec.Ports[0].Port != 6379 {
				return fmt.Errorf("ports %+v", si.Spec.Ports)
			}
			return nil
		})
	})

	t.Run("exported metadata, traffic policy and distribution reach every import; differences conflict on both", func(t *testing.T) {
		local, prefer := corev1.ServiceInternalTrafficPolicyLocal, corev1.ServiceTrafficDistributionPreferClose
		for _, m := range []*member{east, west} {
			svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "meta", Labels: map[string]string{"svc-only": "x"}}, Spec: corev1.ServiceSpec{
				Ports: pg, Selector: map[string]string{"app": "meta"}, InternalTrafficPolicy: &local, TrafficDistribution: &prefer,
			}}
			if err := m.client.Create(ctx, svc); err != nil {
				t.Fatal(err)
			}
			se := &mcsv1alpha1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "meta"}, Spec: mcsv1alpha1.ServiceExportSpec{
				ExportedLabels: map[string]string{"tier": m.name}, ExportedAnnotations: map[string]string{"owner": "team-a"},
			}}
			if err := m.client.Create(ctx, se); err != nil {
				t.Fatal(err)
			}
			if m == east { // east's export is the oldest (or, within the same second, first by name): its labels win
				testenv.Eventually(ctx, t, wait, "east's meta export is ready", condition(ctx, east.client, "app", "meta", mcsv1alpha1.ServiceExportConditionReady, metav1.ConditionTrue, "Exported"))
			}
		}
		for _, m := range []*member{east, west} {
			testenv.Eventually(ctx, t, wait, m.name+"'s export has a LabelsConflict", condition(ctx, m.client, "app", "meta", mcsv1alpha1.ServiceExportConditionConflict, metav1.ConditionTrue, "LabelsConflict"))
		}
		for _, m := range []*member{hub, east, west} {
			testenv.Eventually(ctx, t, wait, m.name+" imports east's metadata and the service's policies", func(ctx context.Context) error {
				var si mcsv1alpha1.ServiceImport
				if err := m.client.Get(ctx, client.ObjectKey{Namespace: "app", Name: "meta"}, &si); err != nil {
					return err
				}
				switch {
				case si.Labels["tier"] != "east" || si.Labels["svc-only"] != "" || si.Annotations["owner"] != "team-a":
					return fmt.Errorf("labels %v annotations %v", si.Labels, si.Annotations)
				case si.Spec.InternalTrafficPolicy == nil || *si.Spec.InternalTrafficPolicy != local:
					return fmt.Errorf("internalTrafficPolicy %v", si.Spec.InternalTrafficPolicy)
				case si.Spec.TrafficDistribution == nil || *si.Spec.TrafficDistribution != prefer:
					return fmt.Errorf("trafficDistribution %v", si.Spec.TrafficDistribution)
				}
				ready := meta.FindStatusCondition(si.Status.Conditions, string(mcsv1alpha1.ServiceImportConditionReady))
				if ready == nil || ready.Status != metav1.ConditionTrue || si.Status.EndpointSliceObjects != mcsv1alpha1.EndpointSliceObjectsPresent {
					return fmt.Errorf("status %+v", si.Status)
				}
				return nil
			})
		}
		// West follows east: the conflict is resolved on both exports.
		var se mcsv1alpha1.ServiceExport
		if err := west.client.Get(ctx, client.ObjectKey{Namespace: "app", Name: "meta"}, &se); err != nil {
			t.Fatal(err)
		}
		se.Spec.ExportedLabels = map[string]string{"tier": "east"}
		if err := west.client.Update(ctx, &se); err != nil {
			t.Fatal(err)
		}
		for _, m := range []*member{east, west} {
			testenv.Eventually(ctx, t, wait, m.name+"'s export has no conflict", condition(ctx, m.client, "app", "meta", mcsv1alpha1.ServiceExportConditionConflict, metav1.ConditionFalse, "NoConflicts"))
		}
	})

	t.Run("each port of a ClusterSetIP leads only to the clusters that serve it", func(t *testing.T) {
		eastWeb := exportService(ctx, t, east.client, "app", "web", []corev1.ServicePort{{Name: "tcp", Protocol: corev1.ProtocolTCP, Port: 42}}, true)
		westWeb := exportService(ctx, t, west.client, "app", "web", []corev1.ServicePort{{Name: "tcp2", Protocol: corev1.ProtocolTCP, Port: 4242}}, true)
		for _, m := range []*member{east, west} {
			testenv.Eventually(ctx, t, wait, m.name+"'s web export has a PortConflict", condition(ctx, m.client, "app", "web", mcsv1alpha1.ServiceExportConditionConflict, metav1.ConditionTrue, "PortConflict"))
		}
		clusterSetIP(ctx, t, hub, "app", "web")
		testenv.Eventually(ctx, t, wait, "hub's ClusterSetIP sends 42 to east and 4242 to west", vipLeadsTo(hub, "app", "web", "east="+eastWeb+":42", "west="+westWeb+":4242"))
		// east's own pod serves 42; 4242 only west serves, and only once east's gateway
		// reaches west.
		clusterSetIP(ctx, t, east, "app", "web")
		testenv.Eventually(ctx, t, wait, "east's ClusterSetIP keeps 42 local, and no 4242 while west is unreachable", vipLeadsTo(east, "app", "web", "east=10.250.0.1:42"))
		setGateway(ctx, t, east.client, map[string]time.Duration{"west": 2 * time.Millisecond})
		testenv.Eventually(ctx, t, wait, "east's ClusterSetIP sends 4242 to west", vipLeadsTo(east, "app", "web", "east=10.250.0.1:42", "west="+westWeb+":4242"))
	})

	t.Run("an ExternalName service is not valid and not exported", func(t *testing.T) {
		if err := hub.client.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "ext"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com"}}); err != nil {
			t.Fatal(err)
		}
		if err := hub.client.Create(ctx, &mcsv1alpha1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "ext"}}); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(ctx, t, wait, "Valid=False", condition(ctx, hub.client, "app", "ext", mcsv1alpha1.ServiceExportConditionValid, metav1.ConditionFalse, "InvalidServiceType"))
		testenv.Eventually(ctx, t, wait, "an InvalidServiceType Warning", eventOn(hub.client, "app", "ext", corev1.EventTypeWarning, "InvalidServiceType"))
		testenv.Eventually(ctx, t, wait, "not resolvable", answers(east, "ext.app.svc.clusterset.local", dns.TypeA))
	})

	t.Run("unexport removes the cluster from imports and DNS", func(t *testing.T) {
		if err := west.client.Delete(ctx, &mcsv1alpha1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "db"}}); err != nil {
			t.Fatal(err)
		}
		for _, m := range f.members {
			testenv.Eventually(ctx, t, wait, m.name+" imports app/db from east only", importOf(m.client, "app", "db", "east"))
		}
		testenv.Eventually(ctx, t, wait, "west.db is gone", answers(hub, "west.db.app.svc.clusterset.local", dns.TypeA))
		testenv.Eventually(ctx, t, wait, "db keeps its ClusterSetIP", answers(hub, "db.app.svc.clusterset.local", dns.TypeA, hubVIP))
		// Even with west nearer, west no longer exports: the VIP leads to east.
		setGateway(ctx, t, hub.client, map[string]time.Duration{"east": 3 * time.Millisecond, "west": time.Millisecond})
		testenv.Eventually(ctx, t, wait, "the ClusterSetIP leads to east only", vipLeadsTo(hub, "app", "db", "east="+eastIP+":5432"))
		setGateway(ctx, t, hub.client, map[string]time.Duration{"east": time.Millisecond, "west": 3 * time.Millisecond})
		var now mcsv1alpha1.ServiceImport
		if err := f.broker.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "app.db.east"}, &now); err != nil || now.UID != eastPublished {
			t.Errorf("east's broker ServiceImport was deleted or re-created while east kept exporting (%v)", err)
		}
	})

	t.Run("deleting the service removes its imports everywhere", func(t *testing.T) {
		if err := east.client.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "db"}}); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(ctx, t, wait, "Valid=False NoService", condition(ctx, east.client, "app", "db", mcsv1alpha1.ServiceExportConditionValid, metav1.ConditionFalse, "NoService"))
		for _, m := range f.members {
			testenv.Eventually(ctx, t, wait, m.name+" has no app/db import", importOf(m.client, "app", "db"))
			testenv.Eventually(ctx, t, wait, m.name+" has no ClusterSetIP for app/db", func(ctx context.Context) error {
				var svc corev1.Service
				err := m.client.Get(ctx, client.ObjectKey{Namespace: "app", Name: serviceimport.DerivedName("db")}, &svc)
				if !apierrors.IsNotFound(err) {
					return fmt.Errorf("derived Service still there (%v)", err)
				}
				return vipLeadsTo(m, "app", "db")(ctx)
			})
		}
		testenv.Eventually(ctx, t, wait, "NXDOMAIN", answers(hub, "db.app.svc.clusterset.local", dns.TypeA))
	})

	t.Run("a removed cluster's slices disappear", func(t *testing.T) {
		var si mcsv1alpha1.ServiceImport
		if err := f.broker.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "app.cache.west"}, &si); err != nil {
			t.Fatal(err)
		}
		if refs := si.OwnerReferences; len(refs) != 1 || refs[0].Name != "cluster-west" {
			t.Fatalf("west's broker objects are not owned by its broker identity: %+v", refs)
		}
		// Removing west from the fleet stops its controller and prunes its broker identity;
		// the garbage collector (absent here) then deletes what it owned, as done below.
		west.haltTB(t)
		if err := f.broker.Delete(ctx, &si); err != nil {
			t.Fatal(err)
		}
		if err := f.broker.DeleteAllOf(ctx, &discoveryv1.EndpointSlice{}, client.InNamespace(f.ns), client.MatchingLabels{mcnetv1.ClusterLabel: "west"}); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"hub", "east"} {
			testenv.Eventually(ctx, t, wait, name+" imports app/cache from east only", importOf(f.members[name].client, "app", "cache", "east"))
		}
		testenv.Eventually(ctx, t, wait, "west.cache is gone", answers(hub, "west.cache.app.svc.clusterset.local", dns.TypeA))
		west.startTB(ctx, t) // for the cleanup's halt
	})
}

// BenchmarkExportToResolve measures the time from creating a ServiceExport in one
// cluster to its name resolving at another cluster's DNS server, through the broker.
func BenchmarkExportToResolve(b *testing.B) {
	ctx := b.Context()
	f := startFleet(b)
	east, west := f.members["east"], f.members["west"]
	pg := []corev1.ServicePort{{Name: "pg", Protocol: corev1.ProtocolTCP, Port: 5432}}
	if err := west.client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench"}}); err != nil {
		b.Fatal(err)
	}
	setGateway(ctx, b, west.client, map[string]time.Duration{"east": time.Millisecond})
	// Warm up: the controllers have started and the DNS server is serving.
	warm := exportService(ctx, b, east.client, "bench", "warmup", pg, true)
	testenv.Eventually(ctx, b, 60*time.Second, "warm-up export resolves", answersOneOf(west, "warmup.bench.svc.clusterset.local", warm))
	var total, worst time.Duration
	n := max(b.N, 5)
	for i := range n {
		name := fmt.Sprintf("svc-%d", i)
		ip := exportService(ctx, b, east.client, "bench", name, pg, false)
		start := time.Now()
		if err := east.client.Create(ctx, &mcsv1alpha1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name}}); err != nil {
			b.Fatal(err)
		}
		for {
			if _, got, err := west.resolve(name+".bench.svc.clusterset.local", dns.TypeA); err == nil && len(got) == 1 && got[0] == ip {
				break
			}
			if time.Since(start) > 30*time.Second {
				b.Fatalf("%s did not resolve", name)
			}
			time.Sleep(2 * time.Millisecond)
		}
		d := time.Since(start)
		total += d
		worst = max(worst, d)
	}
	mean := total / time.Duration(n)
	b.ReportMetric(float64(mean.Milliseconds()), "ms/export")
	fmt.Printf("discovery: export-to-resolvable (ServiceExport created in east → A record at west's DNS, via the broker): mean %s, max %s over %d exports (target < 2s)\n",
		mean.Round(time.Millisecond), worst.Round(time.Millisecond), n)
}
