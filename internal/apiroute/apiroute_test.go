package apiroute

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/mcnet-io/mcnet/internal/testenv"
)

// listen returns a loopback listener that accepts and holds connections.
func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	return l
}

// recording dials for real and records where it dialled.
type recording struct{ dialled []string }

func (d *recording) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.dialled = append(d.dialled, addr)
	var nd net.Dialer
	return nd.DialContext(ctx, network, addr)
}

func TestDialPrefersTheAPIServersOwnAddress(t *testing.T) {
	ctx := t.Context()
	service := testenv.UnusedTCPAddr(t) // a ClusterIP kube-proxy does not route yet: refused
	direct := listen(t).Addr().String()
	d := &recording{}
	r := New(service, d.dial)

	// Nothing learned yet: the ClusterIP is all there is, and its error is returned.
	if _, err := r.DialContext(ctx, "tcp", service); err == nil {
		t.Fatal("dial to a refusing ClusterIP with no direct address succeeded")
	}
	r.Set([]string{direct})
	c, err := r.DialContext(ctx, "tcp", service)
	if err != nil {
		t.Fatalf("dial with the direct address known: %v", err)
	}
	c.Close()
	if got := c.RemoteAddr().String(); got != direct {
		t.Errorf("connected to %s, want the direct address %s", got, direct)
	}
	// Other addresses are dialled as they are.
	other := listen(t).Addr().String()
	d.dialled = nil
	c, err = r.DialContext(ctx, "tcp", other)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if !slices.Equal(d.dialled, []string{other}) {
		t.Errorf("dial to %s went to %v", other, d.dialled)
	}
	// An empty set (the API server removed itself while stopping) keeps the last one.
	r.Set(nil)
	if got := r.Direct(); !slices.Equal(got, []string{direct}) {
		t.Errorf("direct addresses after an empty set: %v", got)
	}
}

func TestDialFallsBackAndDistrustsAFailedAddress(t *testing.T) {
	ctx := t.Context()
	service := listen(t).Addr().String()
	gone, live := testenv.UnusedTCPAddr(t), listen(t).Addr().String()
	d := &recording{}
	now := time.Unix(1000, 0)
	r := New(service, d.dial)
	r.now = func() time.Time { return now }
	r.Set([]string{gone, live})

	c, err := r.DialContext(ctx, "tcp", service)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if c.RemoteAddr().String() != live || !slices.Equal(d.dialled, []string{gone, live}) {
		t.Fatalf("connected to %s after dialling %v, want %s after %s", c.RemoteAddr(), d.dialled, live, gone)
	}
	select {
	case <-r.stale:
		t.Error("a re-read asked for although a direct address answered")
	default:
	}
	// The failed address now comes after the ClusterIP, until distrust has passed.
	if got, want := r.order(), []string{live, service, gone}; !slices.Equal(got, want) {
		t.Errorf("order after a failure: %v, want %v", got, want)
	}
	now = now.Add(distrust)
	if got, want := r.order(), []string{gone, live, service}; !slices.Equal(got, want) {
		t.Errorf("order once distrust passed: %v, want %v", got, want)
	}
	// With every direct address down, the ClusterIP serves.
	r.Set([]string{gone})
	d.dialled = nil
	c, err = r.DialContext(ctx, "tcp", service)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if c.RemoteAddr().String() != service {
		t.Errorf("connected to %s, want the ClusterIP %s", c.RemoteAddr(), service)
	}
	// Only the ClusterIP answered: Learn is asked to read the addresses again.
	select {
	case <-r.stale:
	default:
		t.Error("no re-read asked for when no direct address answered")
	}
}

func TestInstallOnlyForAnInClusterAddress(t *testing.T) {
	for host, want := range map[string]bool{
		"https://10.96.0.1:443":        true,
		"https://[fd00::1]:443":        true,
		"https://api.example.com:6443": false, // a name: not the ClusterIP
		"https://10.96.0.1":            false, // no port, not what InClusterConfig writes
	} {
		cfg := &rest.Config{Host: host}
		if got := Install(cfg) != nil; got != want || (cfg.Dial != nil) != want {
			t.Errorf("Install(%s) = %v (Dial set %v), want %v", host, got, cfg.Dial != nil, want)
		}
	}
}

func TestAddresses(t *testing.T) {
	s := &discoveryv1.EndpointSlice{
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("other"), Port: ptr.To[int32](80)}, {Name: ptr.To("https"), Port: ptr.To[int32](6443)}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"198.18.0.2"}},
			{Addresses: []string{"198.18.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}},
			{Addresses: []string{"198.18.0.3"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}},
			{Addresses: []string{"fd00::1", "not-an-ip"}},
		},
	}
	want := []string{"198.18.0.1:6443", "198.18.0.2:6443", "[fd00::1]:6443"}
	if got := Addresses(s); !slices.Equal(got, want) {
		t.Errorf("Addresses = %v, want %v", got, want)
	}
	if got := Addresses(&discoveryv1.EndpointSlice{Endpoints: s.Endpoints}); got != nil {
		t.Errorf("Addresses without a port = %v, want none", got)
	}
}

func TestLearn(t *testing.T) {
	kube := fake.NewClientset(&discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespaceDefault, Name: ServiceName},
		Ports:      []discoveryv1.EndpointPort{{Name: ptr.To("https"), Port: ptr.To[int32](6443)}},
		Endpoints:  []discoveryv1.Endpoint{{Addresses: []string{"198.18.0.1"}}},
	})
	r := New("10.96.0.1:443", nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { r.Learn(ctx, logr.Discard(), kube); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for len(r.Direct()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if got := r.Direct(); !slices.Equal(got, []string{"198.18.0.1:6443"}) {
		t.Errorf("learned %v", got)
	}
	// Without the EndpointSlice (or the right to read it) Learn returns at once.
	r = New("10.96.0.1:443", nil)
	r.Learn(t.Context(), logr.Discard(), fake.NewClientset())
	if got := r.Direct(); got != nil {
		t.Errorf("learned %v from nothing", got)
	}
}

func TestAnOutageDistrustsNoAddress(t *testing.T) {
	service, direct := testenv.UnusedTCPAddr(t), testenv.UnusedTCPAddr(t)
	r := New(service, (&recording{}).dial)
	r.Set([]string{direct})
	if _, err := r.DialContext(t.Context(), "tcp", service); err == nil {
		t.Fatal("dial with nothing listening succeeded")
	}
	// When the API server returns, its own address is tried first again.
	if got, want := r.order(), []string{direct, service}; !slices.Equal(got, want) {
		t.Errorf("order after an outage: %v, want %v", got, want)
	}
}
