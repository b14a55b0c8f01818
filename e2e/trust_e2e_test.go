//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/controllers/serviceimport"
	"github.com/mcnet-io/mcnet/e2e/fleetlab"
	"github.com/mcnet-io/mcnet/e2e/lab"
	"github.com/mcnet-io/mcnet/internal/controller"
	"github.com/mcnet-io/mcnet/internal/diagnose"
	"github.com/mcnet-io/mcnet/internal/naming"
)

// The adversarial suite: one member's broker credentials in hostile hands. The broker's
// admission policy is the first line (it refuses what the writer's allocation in the
// fleet table does not hold); the receivers' own checks against the table are the
// second, for whatever reaches the broker past the policy (written here with the
// broker's administrator credentials, as a broker whose policy is missing or bypassed
// would hold it). The envtest suites (internal/controller TestReceiversTrustOnlyTheTable,
// TestReceiversCapAFloodingWriter) check the importer's logic; this one checks the
// chain users run: the rendered policy on a real broker, the gateways' and route
// agents' kernels, mcnet-dns behind CoreDNS, and traffic through the tunnels.

// brokerAs is a client of the broker with the broker credentials delivered to member c
// (Secret mcnet-system/mcnet-broker-credentials), pointed at the broker's address as
// the test reaches it.
func brokerAs(ctx context.Context, t *testing.T, broker, c *lab.Cluster) client.Client {
	t.Helper()
	sec, err := c.Client.CoreV1().Secrets(mcnetv1.SystemNamespace).Get(ctx, naming.BrokerCredentialsSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kc, err := clientcmd.Load(sec.Data["kubeconfig"])
	if err != nil {
		t.Fatal(err)
	}
	auth := kc.AuthInfos[kc.Contexts[kc.CurrentContext].AuthInfo]
	cfg := rest.CopyConfig(broker.Config)
	cfg.TLSClientConfig = rest.TLSClientConfig{CAData: broker.Config.CAData}
	cfg.BearerToken, cfg.Username, cfg.Password = auth.Token, "", ""
	s, err := controller.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// mustRefuse checks that the broker refused a write as Forbidden, naming why.
func mustRefuse(t *testing.T, what string, err error, why string) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s: the broker accepted it", what)
	case !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err):
		t.Errorf("%s: %v, want Forbidden", what, err)
	case !strings.Contains(err.Error(), why):
		t.Errorf("%s: refused with %q, want it to say %q", what, err, why)
	default:
		t.Logf("%s: refused: %v", what, err)
	}
}

// hostileExport is an export of default/name as writer (mcnet.io/cluster) would
// publish it, with edit applied to its labels, and one EndpointSlice of addrs.
func hostileExport(name, writer string, port int32, edit func(map[string]string), addrs ...string) (*mcsv1alpha1.ServiceImport, *discoveryv1.EndpointSlice) {
	labels := naming.BrokerLabels("default", name, writer)
	edit(labels)
	si := &mcsv1alpha1.ServiceImport{
		ObjectMeta: metav1.ObjectMeta{Namespace: mcnetv1.DefaultBrokerNamespace, Name: naming.BrokerName("default", name, writer), Labels: labels},
		Spec:       mcsv1alpha1.ServiceImportSpec{Type: mcsv1alpha1.ClusterSetIP, Ports: []mcsv1alpha1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: port}}},
	}
	sliceLabels := map[string]string{discoveryv1.LabelManagedBy: naming.SliceManagedBy}
	for k, v := range labels {
		sliceLabels[k] = v
	}
	ready := true
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: mcnetv1.DefaultBrokerNamespace, Name: si.Name + ".ipv4", Labels: sliceLabels},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptrTo("http"), Port: ptrTo(port), Protocol: ptrTo(corev1.ProtocolTCP)}},
	}
	for _, a := range addrs {
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
	}
	return si, sl
}

// createAll creates objs with cl, stopping at the first error.
func createAll(ctx context.Context, cl client.Client, objs ...client.Object) error {
	for _, o := range objs {
		if err := cl.Create(ctx, o); err != nil {
			return fmt.Errorf("create %T %s: %w", o, o.GetName(), err)
		}
	}
	return nil
}

// deleteAll deletes objs with cl, ignoring those already gone.
func deleteAll(ctx context.Context, t *testing.T, cl client.Client, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := cl.Delete(ctx, o); err != nil && !apierrors.IsNotFound(err) {
			t.Error(err)
		}
	}
}

// trustKernel renders, per node of clusters, what another cluster's publications could
// change in its kernel: the policy rules, the routes of mcnet's table and the main one,
// the VXLAN forwarding entries, mcnet's links and packet filter chains.
func trustKernel(ctx context.Context, clusters ...*lab.Cluster) (map[string]string, error) {
	out := map[string]string{}
	for _, c := range clusters {
		for _, n := range c.Nodes {
			var b strings.Builder
			for _, cmd := range []string{
				"ip -o rule show",
				"ip -o route show table 2711; ip -o route show table main",
				"bridge fdb show dev mcnet-vx 2>/dev/null | sort; true",
				"ip -o link show | grep -o 'mcnet-[a-z]*' | sort",
				"for t in filter nat mangle; do iptables -t $t -S | grep MCNET; done; nft -s list table inet mcnet 2>/dev/null; true",
			} {
				s, err := n.Exec(ctx, "sh", "-c", cmd)
				if err != nil {
					return nil, fmt.Errorf("%s: %s: %w: %s", n.Name, cmd, err, s)
				}
				b.WriteString(s)
			}
			out[n.Name] = b.String()
		}
	}
	return out, nil
}

// sameKernel says how the kernels of clusters differ from before.
func sameKernel(before map[string]string, clusters ...*lab.Cluster) func(context.Context) error {
	return func(ctx context.Context) error {
		now, err := trustKernel(ctx, clusters...)
		if err != nil {
			return err
		}
		var errs []error
		for n, s := range before {
			if now[n] != s {
				errs = append(errs, fmt.Errorf("node %s changed:\n--- before\n%s\n--- now\n%s", n, s, now[n]))
			}
		}
		return errors.Join(errs...)
	}
}

// importState renders a cluster's import of service name in namespace default: its
// type and ports, and the addresses of its imported EndpointSlices by cluster.
func importState(ctx context.Context, cl client.Client, name string) (string, error) {
	var list mcsv1alpha1.ServiceImportList
	if err := cl.List(ctx, &list, client.InNamespace("default")); err != nil {
		return "", err
	}
	var lines []string
	for _, si := range list.Items {
		if si.Name != name {
			continue
		}
		var sls discoveryv1.EndpointSliceList
		if err := cl.List(ctx, &sls, client.InNamespace("default"), naming.ImportedSliceSelector(si.Name)); err != nil {
			return "", err
		}
		var addrs []string
		for _, s := range sls.Items {
			for _, e := range s.Endpoints {
				addrs = append(addrs, s.Labels[mcsv1alpha1.LabelSourceCluster]+"="+strings.Join(e.Addresses, ","))
			}
		}
		slices.Sort(addrs)
		lines = append(lines, fmt.Sprintf("%s %s %v %v", si.Name, si.Spec.Type, si.Spec.Ports, addrs))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n"), nil
}

// warningEvent waits for a Warning Event with reason whose message holds every one of
// parts, in any namespace of c.
func warningEvent(c *lab.Cluster, reason string, parts ...string) func(context.Context) error {
	return func(ctx context.Context) error {
		list, err := c.Client.EventsV1().Events("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		var seen []string
		for _, e := range list.Items {
			if e.Type != corev1.EventTypeWarning || e.Reason != reason {
				continue
			}
			seen = append(seen, e.Note)
			if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(e.Note, p) }) {
				return nil
			}
		}
		return fmt.Errorf("%s: no Warning %s naming %q (seen: %q)", c.Name, reason, parts, seen)
	}
}

// TestHostileMember holds c3's broker credentials in hostile hands while c2 exports a
// service that c1 resolves and reaches. c3 publishes an Endpoint claiming c2's pod
// CIDR, the cloud metadata address and the default route; exports under c2's name and
// an older-dated copy of c2's service; and more exports than the fleet table allows it.
// The broker refuses what it can judge, and for the same writes put past its policy
// the gateways and route agents of c1 and c2 keep their kernels, c1's importer and DNS
// keep their answers and say why (a condition and Events naming c3), and TCP from c1
// to c2 flows throughout.
//
// Then on the wire, with a NetworkPolicy engine (kube-router's firewall) on every node
// and a standby gateway in c2: a policy in c2 admitting c1's pod by its /32 keeps out
// its neighbour and c3's pod; from c3's gateway node, VXLAN frames into c2's cable
// port from an address no current gateway has are dropped (the same frame from c1's
// gateway gets in); and with c2's active gateway frozen, answers forged and replayed
// from c3's node in the holder's name do not keep c2's standby from taking over.
func TestHostileMember(t *testing.T) {
	ctx := t.Context()
	cs := connectFleet(mcnetv1.CableVXLAN, mcnetv1.CableVXLAN, mcnetv1.CableVXLAN)
	const maxExports = 3
	cs.Spec.Clusters[2].MaxExports = maxExports
	opts, err := fleetlab.LabOptions(cs, 2)
	if err != nil {
		t.Fatal(err)
	}
	// A NetworkPolicy engine on every node, and a standby gateway in c2.
	opts.NetworkPolicy = true
	opts.Clusters[1].Nodes, opts.Clusters[1].Gateways = 3, 2
	l := startConnectedWith(t, cs, opts)
	c1, c2, c3 := l.Clusters()[0], l.Clusters()[1], l.Clusters()[2]
	broker := l.Cluster(cs.Spec.Broker.Cluster)
	admin := mcsClient(t, broker) // past the admission policy
	hostile := brokerAs(ctx, t, broker, c3)
	servers, clients := serveOnWorkers(t, l.Lab)
	// A neighbour of c1's client, for the NetworkPolicy: same node, another pod.
	neighbour, err := l.AddPod(ctx, c1.Workers()[0], lab.PodOptions{Name: "client2"})
	if err != nil {
		t.Fatal(err)
	}
	const wait = time.Minute

	// c2 exports web; c1 resolves it through its CoreDNS and reaches it.
	svc, err := c2.CreateService(ctx, lab.ServiceOptions{Name: "web", Namespace: "default", Selector: map[string]string{"app": "web"}, Ports: map[int32]int32{80: 8080}})
	if err != nil {
		t.Fatal(err)
	}
	if err := mcsClient(t, c2).Create(ctx, &mcsv1alpha1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}}); err != nil {
		t.Fatal(err)
	}
	d := digger{pod: clients[c1.Name], server: startClusterDNS(t, l.Lab, c1)}
	web := "web.default.svc.clusterset.local"
	if err := lab.Eventually(ctx, wait, d.expect(c2.Name+"."+web, "A", svc.Spec.ClusterIP)); err != nil {
		t.Fatal(err)
	}
	vip := clusterSetIP(ctx, t, c1, "default", "web")
	if err := lab.Eventually(ctx, wait, d.expect(web, "A", vip)); err != nil {
		t.Fatal(err)
	}
	byName := func(ctx context.Context) error {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		body, err := clients[c1.Name].HTTPGet(actx, "http://"+net.JoinHostPort(vip, "80")+"/")
		if err == nil && !strings.HasPrefix(body, servers[c2.Name].String()+" ") {
			err = fmt.Errorf("web's ClusterSetIP answered %q, want %s", body, servers[c2.Name])
		}
		return err
	}
	if err := lab.Eventually(ctx, wait, byName); err != nil {
		t.Fatal(err)
	}
	// A TCP connection from c1 to c2's pod, carried through every attack.
	if err := servers[c2.Name].ServeEcho(ctx, 7000); err != nil {
		t.Fatal(err)
	}
	stream, err := startTCP(ctx, clients[c1.Name], net.JoinHostPort(servers[c2.Name].IP.String(), "7000"))
	if err != nil {
		t.Fatal(err)
	}
	// c3's own controller withdraws broker exports it did not publish: the attacker
	// who holds c3 stops it, so what is written below stays.
	deployments := c3.Client.AppsV1().Deployments(mcnetv1.SystemNamespace)
	ctrl, err := deployments.Get(ctx, "mcnet-controller", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	replicas := ptrTo(int32(1))
	if ctrl.Spec.Replicas != nil {
		replicas = ctrl.Spec.Replicas
	}
	if _, err := deployments.Patch(ctx, "mcnet-controller", "application/merge-patch+json",
		[]byte(`{"spec":{"replicas":0}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := lab.Eventually(ctx, wait, func(ctx context.Context) error {
		pods, err := c3.Client.CoreV1().Pods(mcnetv1.SystemNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=mcnet-controller"})
		if err != nil || len(pods.Items) > 0 {
			return fmt.Errorf("c3's controller still runs: %v", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	c1Client := mcsClient(t, c1)
	imports, err := importState(ctx, c1Client, "web")
	if err != nil {
		t.Fatal(err)
	}
	kernel, err := trustKernel(ctx, c1, c2)
	if err != nil {
		t.Fatal(err)
	}
	// unchanged is what every attack must leave as it was, checked after each.
	unchanged := func(t *testing.T) {
		t.Helper()
		if err := sameKernel(kernel, c1, c2)(ctx); err != nil {
			t.Error(err)
		}
		if got, err := importState(ctx, c1Client, "web"); err != nil || got != imports {
			t.Errorf("c1's imports: %v\n%s\nwant\n%s", err, got, imports)
		}
		for _, check := range []func(context.Context) error{d.expect(c2.Name+"."+web, "A", svc.Spec.ClusterIP), d.expect(web, "A", vip), byName} {
			if err := check(ctx); err != nil {
				t.Error(err)
			}
		}
		if err := get(ctx, clients[c1.Name], servers[c2.Name], "http://"+net.JoinHostPort(servers[c2.Name].IP.String(), "8080")+"/"); err != nil {
			t.Errorf("c1 -> c2 pod: %v", err)
		}
	}
	t.Run("an Endpoint claiming another cluster's and out-of-fleet ranges", func(t *testing.T) {
		var ep mcnetv1.Endpoint
		key := client.ObjectKey{Namespace: mcnetv1.DefaultBrokerNamespace, Name: c3.Name}
		if err := hostile.Get(ctx, key, &ep); err != nil {
			t.Fatal(err)
		}
		claims := []string{c2.PodCIDR.String(), "169.254.169.254/32", "0.0.0.0/0"}
		ep.Spec.Subnets = append(ep.Spec.Subnets, claims...)
		mustRefuse(t, "c3 claims "+strings.Join(claims, ", "), hostile.Update(ctx, ep.DeepCopy()), "outside its allocation")
		var theirs mcnetv1.Endpoint
		if err := hostile.Get(ctx, client.ObjectKey{Namespace: mcnetv1.DefaultBrokerNamespace, Name: c2.Name}, &theirs); err != nil {
			t.Fatal(err)
		}
		theirs.Spec.Subnets = []string{"0.0.0.0/0"}
		mustRefuse(t, "c3 rewrites c2's Endpoint", hostile.Update(ctx, &theirs), "")

		// Past the policy: c3's own gateway republishes its Endpoint, so the claim is
		// written again and again while the receivers are watched.
		actx, stop := context.WithCancel(ctx)
		defer stop()
		go func() {
			for actx.Err() == nil {
				var cur mcnetv1.Endpoint
				if err := admin.Get(actx, key, &cur); err == nil && !slices.Contains(cur.Spec.Subnets, "0.0.0.0/0") {
					cur.Spec.Subnets = append(cur.Spec.Subnets, claims...)
					_ = admin.Update(actx, &cur)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}()
		condition := func(ctx context.Context) error {
			gw, err := activeGateway(ctx, c1)
			if err != nil {
				return err
			}
			c := meta.FindStatusCondition(gw.Status.Conditions, mcnetv1.GatewayConditionRemotesInAllocation)
			if c == nil || c.Status != metav1.ConditionFalse || c.Reason != mcnetv1.ReasonOutsideAllocation || !strings.Contains(c.Message, c3.Name) || !strings.Contains(c.Message, "0.0.0.0/0") {
				return fmt.Errorf("%s: %s is %+v, want False %s naming %s", gw.Name, mcnetv1.GatewayConditionRemotesInAllocation, c, mcnetv1.ReasonOutsideAllocation, c3.Name)
			}
			return nil
		}
		if err := lab.Eventually(ctx, wait, condition); err != nil {
			t.Error(err)
		}
		if err := lab.Eventually(ctx, wait, warningEvent(c1, mcnetv1.ReasonOutsideAllocation, c3.Name, "169.254.169.254/32")); err != nil {
			t.Error(err)
		}
		// The gateways and route agents go on reading the claim: nothing of it, ever.
		if err := consistently(ctx, 5*time.Second, sameKernel(kernel, c1, c2)); err != nil {
			t.Error(err)
		}
		unchanged(t)
		stop()
	})

	t.Run("exports under another cluster's name and an older-dated copy", func(t *testing.T) {
		asC2 := func(l map[string]string) { l[mcsv1alpha1.LabelSourceCluster] = c2.Name }
		si, sl := hostileExport("web", c3.Name, 80, asC2, c3.PodCIDR.Addr().Next().String())
		mustRefuse(t, "c3 exports web as c2", createAll(ctx, hostile, si), "may only publish exports labelled")
		named, _ := hostileExport("web", c2.Name, 80, func(map[string]string) {})
		mustRefuse(t, "c3 writes c2's export of web", createAll(ctx, hostile, named), "")

		// Past the policy: the same impersonation on the broker, with an endpoint.
		if err := createAll(ctx, admin, si, sl); err != nil {
			t.Fatal(err)
		}
		if err := lab.Eventually(ctx, wait, warningEvent(c1, serviceimport.ReasonOutsideAllocation, c3.Name, "web")); err != nil {
			t.Error(err)
		}
		unchanged(t)
		deleteAll(ctx, t, admin, sl, si)

		// An older-dated copy of another type, which as the oldest export would decide
		// the service's type and shut c2's endpoints out: the broker dates it
		// (creationTimestamp is the API server's), so c2's export stays the oldest.
		old, _ := hostileExport("web", c3.Name, 80, func(map[string]string) {})
		old.Spec.Type = mcsv1alpha1.Headless
		old.CreationTimestamp = metav1.NewTime(time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC))
		start := time.Now().Add(-time.Minute)
		// A marker published after it: once c1 imports the marker, its importer has
		// read the copy too.
		marker, markerSlice := hostileExport("marker", c3.Name, 80, func(map[string]string) {}, c3.PodCIDR.Addr().Next().String())
		if err := createAll(ctx, hostile, old, marker, markerSlice); err != nil {
			t.Fatal(err)
		}
		defer deleteAll(ctx, t, hostile, old, markerSlice, marker)
		if old.CreationTimestamp.Time.Before(start) {
			t.Errorf("the broker kept the writer's creationTimestamp %s", old.CreationTimestamp)
		}
		if err := lab.Eventually(ctx, wait, func(ctx context.Context) error {
			return c1Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: "marker"}, &mcsv1alpha1.ServiceImport{})
		}); err != nil {
			t.Fatal(err)
		}
		if err := consistently(ctx, 5*time.Second, func(ctx context.Context) error {
			got, err := importState(ctx, c1Client, "web")
			if err == nil && got != imports {
				err = fmt.Errorf("c1's import of web:\n%s\nwant\n%s", got, imports)
			}
			return err
		}); err != nil {
			t.Error(err)
		}
		unchanged(t)
	})

	t.Run("more exports than the fleet table allows", func(t *testing.T) {
		var objs []client.Object
		for i := range maxExports + 2 {
			si, sl := hostileExport(fmt.Sprintf("flood-%d", i), c3.Name, 80, func(map[string]string) {}, c3.PodCIDR.Addr().Next().String())
			objs = append(objs, si, sl)
			if err := createAll(ctx, hostile, si, sl); err != nil {
				t.Fatal(err)
			}
			// Within one second of creationTimestamp the name orders them, as created.
		}
		defer deleteAll(ctx, t, hostile, objs...)
		// c1 answers the cap's oldest and not the others.
		for i := range maxExports + 2 {
			name := fmt.Sprintf("flood-%d.default.svc.clusterset.local", i)
			if err := lab.Eventually(ctx, wait, func(ctx context.Context) error {
				rcode, got, err := d.dig(ctx, name, "A")
				switch {
				case err != nil:
					return err
				case i < maxExports && (rcode != "NOERROR" || len(got) != 1):
					return fmt.Errorf("%s: %s %v, want its ClusterSetIP", name, rcode, got)
				case i >= maxExports && rcode != "NXDOMAIN":
					return fmt.Errorf("%s: %s %v, want NXDOMAIN (beyond c3's maxExports)", name, rcode, got)
				}
				return nil
			}); err != nil {
				t.Error(err)
			}
		}
		if err := lab.Eventually(ctx, wait, warningEvent(c1, serviceimport.ReasonExportCapExceeded, c3.Name, "maxExports")); err != nil {
			t.Error(err)
		}
		var list mcsv1alpha1.ServiceImportList
		if err := c1Client.List(ctx, &list, client.InNamespace("default")); err != nil {
			t.Fatal(err)
		}
		var floods []string
		for _, si := range list.Items {
			if strings.HasPrefix(si.Name, "flood-") {
				floods = append(floods, si.Name)
			}
		}
		slices.Sort(floods)
		if want := []string{"flood-0", "flood-1", "flood-2"}; !slices.Equal(floods, want) {
			t.Errorf("c1 imports %v, want %v (c3's maxExports oldest)", floods, want)
		}
		if err := sameKernel(kernel, c1, c2)(ctx); err != nil {
			t.Error(err)
		}
		// diagnose, from every member's broker credentials, names the writer.
		_, out := mcnet(t, l.Kubeconfig(), "diagnose", "-o", "json", "--probe=false")
		var rep struct{ Checks []diagnose.Check }
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("diagnose -o json: %v", err)
		}
		if !slices.ContainsFunc(rep.Checks, func(c diagnose.Check) bool {
			return c.Code == "MCN1108" && c.Offender == c3.Name && strings.Contains(c.Message, "flood-4") && strings.Contains(c.Hint, "maxExports")
		}) {
			t.Errorf("diagnose does not name %s over its maxExports (MCN1108)", c3.Name)
		}
	})

	t.Run("a NetworkPolicy in the destination admits one remote pod and not the others", func(t *testing.T) {
		// c1's client is admitted; its neighbour on the same node and c3's client are
		// not. Without the policy both get in.
		srv := servers[c2.Name]
		url := func(p *lab.Pod) string { return "http://" + net.JoinHostPort(p.IP.String(), "8080") + "/" }
		own := func(p *lab.Pod) netip.Addr { return p.IP }
		for _, cli := range []*lab.Pod{clients[c1.Name], neighbour, clients[c3.Name]} {
			if err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error { return get(ctx, cli, srv, url(srv)) }); err != nil {
				t.Fatalf("%s -> %s without a policy: %v", cli, srv, err)
			}
		}
		checkOverlapPolicy(t, srv, clients[c1.Name], []*lab.Pod{neighbour, clients[c3.Name]}, own, url)
	})

	t.Run("VXLAN frames from the hostile member's node at an address no current gateway has", func(t *testing.T) {
		checkVXLANInjection(t, c2, c1, clients[c1.Name], servers[c2.Name], c3.Gateways()[0])
		unchanged(t)
	})

	sent, stalls, err := stream.stop()
	if err != nil || sent == 0 {
		t.Errorf("TCP c1 -> c2 through the attacks: %d messages, %d stalls: %v", sent, stalls, err)
	}
	t.Logf("TCP c1 -> c2 through the attacks: %d messages echoed, %d stalls", sent, stalls)

	t.Run("forged liveness answers from the hostile member's node do not hold off failover", func(t *testing.T) {
		// c3's controller back: it mirrors c2's Endpoint into c3, so c3 follows c2's
		// failovers and every connection can be up again between them.
		if _, err := deployments.Patch(ctx, "mcnet-controller", "application/merge-patch+json",
			fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, *replicas), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := c3.WaitWorkloads(ctx, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		checkForgedLiveness(t, l, c2, c3.Gateways()[0], clients[c1.Name], servers)
	})
}

// checkForgedLiveness freezes target's active gateway (SIGSTOP: it neither renews its
// Lease nor answers on its liveness port) twice: once as it is, once while attacker
// floods the standby with liveness answers from the holder's own address (the lab's
// WAN lets it spoof): answers the holder really gave, under the cluster's key, to
// challenges the attacker sent it before the freeze, and made-up ones. The standby
// takes over within failoverBound both times, TCP between from's cluster and the
// third cluster flows throughout, and from reaches target's server afterwards.
func checkForgedLiveness(t *testing.T, l *connectedLab, target *lab.Cluster, attacker *lab.Node, from *lab.Pod, servers map[string]*lab.Pod) {
	ctx := t.Context()
	var third *lab.Cluster
	for _, c := range l.Clusters() {
		if c != target && c != from.Node.Cluster {
			third = c
		}
	}
	if err := servers[third.Name].ServeEcho(ctx, 7000); err != nil {
		t.Fatal(err)
	}
	stream, err := startTCP(ctx, from, net.JoinHostPort(servers[third.Name].IP.String(), "7000"))
	if err != nil {
		t.Fatal(err)
	}
	quiet, h1 := freezeHolder(t, l, target, nil)
	t.Logf("%s: frozen holder, no answers: %s holds the Lease after %s", target.Name, h1, quiet.Round(10*time.Millisecond))

	var sent, recorded, pre, in int
	attacked, h2 := freezeHolder(t, l, target, func(holder, standby *lab.Node) func() {
		answers, err := recordAnswers(attacker, holder, 32)
		if err != nil {
			t.Fatal(err)
		}
		recorded = len(answers)
		size := 5 + livenessNonce + 32
		if recorded > 0 {
			size = len(answers[0])
		}
		counter, err := countLiveness(ctx, standby)
		if err != nil {
			t.Fatal(err)
		}
		// From the holder's address (any port: the attacker's own gateway holds the
		// liveness port on its node, and the standby checks the address only).
		stop, err := flood(attacker.Netns, netip.AddrPortFrom(holder.IP, 0),
			netip.AddrPortFrom(standby.WANIP, mcnetv1.DefaultLivenessPort), forgedAnswers(answers, size), time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		return func() {
			var err error
			if sent, err = stop(); err != nil {
				t.Error(err)
			}
			if pre, in, err = counter.read(ctx); err != nil {
				t.Error(err)
			}
			if err := counter.remove(context.WithoutCancel(ctx)); err != nil {
				t.Error(err)
			}
		}
	})
	t.Logf("%s: frozen holder, %d forged answers (%d of them recorded from the holder) from %s as %s: %s holds the Lease after %s; at the standby's WAN port %d arrived, %d delivered",
		target.Name, sent, recorded, attacker.Name, "the holder's address", h2, attacked.Round(10*time.Millisecond), pre, in)
	if recorded == 0 {
		t.Errorf("the holder answered none of %s's challenges: no genuine answer to replay", attacker.Name)
	}
	if in == 0 {
		t.Errorf("none of the %d forged answers reached the standby's liveness socket (%d reached its WAN port): the test cannot tell", sent, pre)
	}
	// A believed answer would keep the frozen holder for as long as the flood lasts
	// (up to 30 s); a loaded lab may be slow to fail over even without one.
	if bound := max(failoverBound, 2*quiet); attacked > bound {
		t.Errorf("%s: under forged answers the standby took over %s after the freeze, want within %s (%s without answers)",
			target.Name, attacked.Round(10*time.Millisecond), bound, quiet.Round(10*time.Millisecond))
	}
	srv := servers[target.Name]
	if err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
		return get(ctx, from, srv, "http://"+net.JoinHostPort(srv.IP.String(), "8080")+"/")
	}); err != nil {
		t.Errorf("%s -> %s after the failovers: %v", from, srv, err)
	}
	sent, stalls, err := stream.stop()
	if err != nil || sent == 0 || stalls > 0 {
		t.Errorf("TCP %s -> %s through both failovers of %s: %d messages, %d stalls: %v", from.Node.Cluster.Name, third.Name, target.Name, sent, stalls, err)
	}
	t.Logf("TCP %s -> %s through both failovers of %s: %d messages echoed, %d stalls", from.Node.Cluster.Name, third.Name, target.Name, sent, stalls)
}

// consistently checks cond every 250 ms for d; the first error ends it.
func consistently(ctx context.Context, d time.Duration, cond func(context.Context) error) error {
	end := time.Now().Add(d)
	for {
		if err := cond(ctx); err != nil {
			return err
		}
		if time.Now().After(end) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
