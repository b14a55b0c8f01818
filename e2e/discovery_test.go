//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/e2e/lab"
	"github.com/mcnet-io/mcnet/internal/controller"
)

// digger asks a cluster's DNS from a pod, with dig, as an application would.
type digger struct {
	pod    *lab.Pod
	server string // the cluster DNS Service's ClusterIP
}

// startClusterDNS returns the ClusterIP of c's cluster DNS, as a platform team runs
// it: the CoreDNS Deployment behind kube-system/kube-dns (lab.Cluster.StartClusterDNS,
// which fleetlab.Install ran), its Corefile importing the server block the render put
// into c's overlay (ConfigMap kube-system/mcnet-coredns, mounted into the pods), which
// forwards the clusterset domain to mcnet-dns at its pinned ClusterIP.
func startClusterDNS(t *testing.T, l *lab.Lab, c *lab.Cluster) string {
	t.Helper()
	ctx := t.Context()
	if _, err := c.Client.CoreV1().ConfigMaps("kube-system").Get(ctx, mcnetv1.CoreDNSConfigMap, metav1.GetOptions{}); err != nil {
		t.Fatalf("the rendered CoreDNS server block: %v", err)
	}
	svc, err := c.Client.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the cluster DNS Service: %v", err)
	}
	return svc.Spec.ClusterIP
}

// dig returns the rcode and the answers' data, sorted.
func (d digger) dig(ctx context.Context, name, qtype string) (string, []string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	out, err := d.pod.Exec(ctx, "dig", "+time=1", "+tries=1", "+noall", "+comments", "+answer", "@"+d.server, name, qtype)
	if err != nil {
		return "", nil, fmt.Errorf("dig %s %s: %w\n%s", name, qtype, err, out)
	}
	rcode := ""
	var answers []string
	for _, line := range strings.Split(out, "\n") {
		if i := strings.Index(line, "status: "); i >= 0 {
			rcode = strings.TrimRight(strings.Fields(line[i+len("status: "):])[0], ",")
		}
		if f := strings.Fields(line); len(f) >= 5 && !strings.HasPrefix(line, ";") && f[3] == qtype {
			answers = append(answers, strings.Join(f[4:], " "))
		}
	}
	slices.Sort(answers)
	return rcode, answers, nil
}

func (d digger) expect(name, qtype string, want ...string) func(context.Context) error {
	return func(ctx context.Context) error {
		rcode, got, err := d.dig(ctx, name, qtype)
		if err != nil {
			return err
		}
		if want == nil {
			if rcode != "NXDOMAIN" {
				return fmt.Errorf("%s %s: %s %v, want NXDOMAIN", name, qtype, rcode, got)
			}
			return nil
		}
		if rcode != "NOERROR" || !slices.Equal(got, want) {
			return fmt.Errorf("%s %s: %s %v, want %v", name, qtype, rcode, got, want)
		}
		return nil
	}
}

func mcsClient(t testing.TB, c *lab.Cluster) client.Client {
	t.Helper()
	s, err := controller.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(c.Config, client.Options{Scheme: s})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// TestDiscovery exports a service from two clusters of a connected lab and resolves it
// from a pod in the third, through that cluster's CoreDNS (which imports the rendered
// server block) and mcnet's DNS server, with every name form; follows a gateway
// failure and an unexport; resolves a headless service per pod.
func TestDiscovery(t *testing.T) {
	ctx := t.Context()
	l := startConnected(t, connectFleet(mcnetv1.CableVXLAN, mcnetv1.CableVXLAN, mcnetv1.CableVXLAN), 2)
	c1, c2, c3 := l.Clusters()[0], l.Clusters()[1], l.Clusters()[2]
	const ns, domain = "default", "clusterset.local"
	servers, clients := serveOnWorkers(t, l.Lab)

	ips := map[string]string{} // cluster → the web Service's ClusterIP
	for _, c := range []*lab.Cluster{c1, c2} {
		svc, err := c.CreateService(ctx, lab.ServiceOptions{Name: "web", Namespace: ns, Selector: map[string]string{"app": "web"}, Ports: map[int32]int32{80: 8080}})
		if err != nil {
			t.Fatal(err)
		}
		ips[c.Name] = svc.Spec.ClusterIP
		if err := mcsClient(t, c).Create(ctx, &mcsv1alpha1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}}); err != nil {
			t.Fatal(err)
		}
	}
	d := digger{pod: clients[c3.Name], server: startClusterDNS(t, l.Lab, c3)}
	web := "web." + ns + ".svc." + domain

	t.Run("every name form answers from a third cluster, and TCP reaches the answer", func(t *testing.T) {
		for _, c := range []*lab.Cluster{c1, c2} {
			if err := lab.Eventually(ctx, time.Minute, d.expect(c.Name+"."+web, "A", ips[c.Name])); err != nil {
				t.Fatal(err)
			}
		}
		if err := lab.Eventually(ctx, 10*time.Second, d.expect("_tcp-80._tcp."+web, "SRV", "0 100 80 "+web+".")); err != nil {
			t.Error(err)
		}
		if err := lab.Eventually(ctx, 10*time.Second, d.expect("nope."+ns+".svc."+domain, "A")); err != nil {
			t.Error(err)
		}
		seen := map[string]bool{}
		for range 40 {
			_, got, err := d.dig(ctx, web, "A")
			if err != nil || len(got) != 1 {
				t.Fatalf("%s: %v %v", web, got, err)
			}
			seen[got[0]] = true
		}
		for c, ip := range ips {
			if !seen[ip] {
				t.Errorf("%s never answered with %s's address %s (RTT-weighted, both connected): %v", web, c, ip, seen)
			}
		}
		// The answer is routable: TCP from c3's pod to each cluster's ClusterIP reaches
		// that cluster's server pod.
		for _, c := range []*lab.Cluster{c1, c2} {
			url := "http://" + net.JoinHostPort(ips[c.Name], "80") + "/"
			if err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
				// A short attempt: a SYN sent before the remote kube-proxy programmed the
				// Service would otherwise hold its un-NATed conntrack entry for the whole
				// wait, retransmitting from the same port.
				ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				body, err := clients[c3.Name].HTTPGet(ctx, url)
				if err == nil && !strings.HasPrefix(body, servers[c.Name].String()+" ") {
					err = fmt.Errorf("answered by %q, want %s", body, servers[c.Name])
				}
				return err
			}); err != nil {
				// Tell a service routing problem from a tunnel problem.
				direct := "http://" + net.JoinHostPort(servers[c.Name].IP.String(), "8080") + "/"
				t.Errorf("TCP to %s's answer %s: %v (same pod by its pod IP: %v)", c.Name, ips[c.Name], err, get(ctx, clients[c3.Name], servers[c.Name], direct))
			}
		}
	})

	t.Run("a dead gateway's cluster drops out within 5 s and returns", func(t *testing.T) {
		gw := c2.Gateways()[0]
		// Where the time goes: when c3's active gateway reports the connection down.
		reported := make(chan time.Duration, 1)
		start := time.Now()
		go func() {
			defer close(reported)
			_ = lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
				agw, err := activeGateway(ctx, c3)
				if err != nil {
					return err
				}
				for _, conn := range agw.Status.Connections {
					if conn.Cluster == c2.Name && conn.Status != mcnetv1.Connected {
						reported <- time.Since(start)
						return nil
					}
				}
				return fmt.Errorf("still connected")
			})
		}()
		if err := gw.SetDown(ctx, true); err != nil {
			t.Fatal(err)
		}
		down := time.Since(start)
		// Dropped: 20 answers in a row without c2's address.
		var dropped time.Duration
		err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
			for range 20 {
				_, got, err := d.dig(ctx, web, "A")
				if err != nil {
					return err
				}
				if slices.Contains(got, ips[c2.Name]) || len(got) != 1 {
					dropped = 0
					return fmt.Errorf("still answered %v", got)
				}
				if dropped == 0 {
					dropped = time.Since(start)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		gwReported := <-reported
		t.Logf("c2 dropped out of answers %.1f s after its gateway went down (node down took %.1f s; c3's gateway reported the connection down at %.1f s)",
			dropped.Seconds(), down.Seconds(), gwReported.Seconds())
		fmt.Printf("discovery: gateway down to cluster out of DNS answers: %.1f s (target < 5 s; powering the node off took %.1f s, c3's gateway status said not connected at %.1f s)\n",
			dropped.Seconds(), down.Seconds(), gwReported.Seconds())
		if dropped > 5*time.Second {
			t.Errorf("c2 dropped out after %s, want < 5s", dropped)
		}
		if err := gw.SetDown(ctx, false); err != nil {
			t.Fatal(err)
		}
		if err := l.waitConnected(ctx, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
			for range 40 {
				if _, got, err := d.dig(ctx, web, "A"); err == nil && slices.Contains(got, ips[c2.Name]) {
					return nil
				}
			}
			return fmt.Errorf("c2 does not answer again")
		}); err != nil {
			t.Error(err)
		}
	})

	t.Run("a headless service resolves per pod across clusters", func(t *testing.T) {
		// StatefulSet-style: a selector-less headless Service and the slice a StatefulSet's
		// pods would give it, with hostnames, in c1 and c2.
		for _, c := range []*lab.Cluster{c1, c2} {
			if _, err := c.CreateService(ctx, lab.ServiceOptions{Name: "db", Namespace: ns, Headless: true, Ports: map[int32]int32{8080: 8080}}); err != nil {
				t.Fatal(err)
			}
			cl := mcsClient(t, c)
			ready := true
			slice := &discoveryv1.EndpointSlice{
				ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "db-sts", Labels: map[string]string{discoveryv1.LabelServiceName: "db"}},
				AddressType: discoveryv1.AddressTypeIPv4,
				Endpoints: []discoveryv1.Endpoint{{
					Addresses: []string{servers[c.Name].IP.String()}, Hostname: ptrTo("db-0"),
					Conditions: discoveryv1.EndpointConditions{Ready: &ready},
				}},
				Ports: []discoveryv1.EndpointPort{{Name: ptrTo("tcp-8080"), Protocol: ptrTo(corev1.ProtocolTCP), Port: ptrTo(int32(8080))}},
			}
			if err := cl.Create(ctx, slice); err != nil {
				t.Fatal(err)
			}
			if err := cl.Create(ctx, &mcsv1alpha1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db"}}); err != nil {
				t.Fatal(err)
			}
		}
		db := "db." + ns + ".svc." + domain
		all := []string{servers[c1.Name].IP.String(), servers[c2.Name].IP.String()}
		slices.Sort(all)
		if err := lab.Eventually(ctx, time.Minute, d.expect(db, "A", all...)); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*lab.Cluster{c1, c2} {
			name := "db-0." + c.Name + "." + db
			if err := lab.Eventually(ctx, 10*time.Second, d.expect(name, "A", servers[c.Name].IP.String())); err != nil {
				t.Error(err)
				continue
			}
			url := "http://" + net.JoinHostPort(servers[c.Name].IP.String(), "8080") + "/"
			if err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error { return get(ctx, clients[c3.Name], servers[c.Name], url) }); err != nil {
				t.Errorf("TCP to %s: %v", name, err)
			}
		}
	})

	t.Run("unexport is NXDOMAIN within 5 s", func(t *testing.T) {
		if err := mcsClient(t, c2).Delete(ctx, &mcsv1alpha1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}}); err != nil {
			t.Fatal(err)
		}
		if err := lab.Eventually(ctx, 10*time.Second, d.expect(c2.Name+"."+web, "A")); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := mcsClient(t, c1).Delete(ctx, &mcsv1alpha1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}}); err != nil {
			t.Fatal(err)
		}
		if err := lab.Eventually(ctx, 5*time.Second, d.expect(web, "A")); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("discovery: unexport to NXDOMAIN in a third cluster: %.2f s (target < 5 s)\n", time.Since(start).Seconds())
	})
}

func ptrTo[T any](v T) *T { return &v }
