// Package apiroute lets an in-cluster client reach its API server at the addresses the
// server publishes for itself (the default/kubernetes EndpointSlice), and not only
// through the kubernetes Service's ClusterIP.
//
// The ClusterIP works through the node's kube-proxy rules. A stopping API server
// removes its own address from the kubernetes Service; when it is back, each node's
// kube-proxy sees it again only once its watch reconnects, after a back-off that
// reaches tens of seconds after a long outage, and differs from node to node. Until
// then nothing on that node reaches the API server through the ClusterIP: a gateway
// there cannot renew its heartbeat while the DNS on another node, whose kube-proxy
// came back first, already reads that heartbeat as stale. Dialled at its own address,
// the API server is reachable the moment it listens, whatever kube-proxy knows.
//
// The TLS session is unchanged: the client still names the ClusterIP, which the
// serving certificate carries; only the TCP connection takes the direct path.
package apiroute

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// ServiceName is the Service, in the default namespace, the API server publishes its
// own addresses under; its EndpointSlice has the same name.
const ServiceName = "kubernetes"

const (
	// attemptTimeout bounds one direct connection attempt, so an address the node
	// cannot reach costs little before the next one, or the ClusterIP, is tried.
	attemptTimeout = time.Second
	// distrust is how long a direct address that failed while another path answered is
	// tried only after the others and the ClusterIP.
	distrust = 30 * time.Second
	// refresh is how often the published addresses are read again: they change when
	// control-plane machines are replaced, rarely, and every node reads them. A dial
	// that finds no direct address working reads them again sooner (minRefresh).
	refresh    = 5 * time.Minute
	minRefresh = 10 * time.Second
)

// Router dials the API server's own addresses for connections to its ClusterIP.
type Router struct {
	service string // the ClusterIP's host:port, as the client dials it
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	now     func() time.Time

	mu sync.Mutex
	// direct are the addresses last published; an empty read keeps the previous set
	// (a stopping API server removes itself, and is the one that comes back).
	direct []string
	failed map[string]time.Time
	// stale wakes Learn when no direct address answered a dial.
	stale chan struct{}
}

// Install makes cfg, an in-cluster config, dial through a new Router, which knows no
// direct address until Learn reads them; a config for any other host is left alone
// and nil is returned.
func Install(cfg *rest.Config) *Router {
	u, err := url.Parse(cfg.Host)
	if err != nil || u.Port() == "" || cfg.Dial != nil {
		return nil
	}
	if _, err := netip.ParseAddr(u.Hostname()); err != nil {
		return nil
	}
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	r := New(u.Host, d.DialContext)
	cfg.Dial = r.DialContext
	return r
}

// Load returns the connection to this cluster's API server: the kubeconfig at path,
// else $KUBECONFIG, else the pod's service account, whose config reaches the API
// server at its own addresses while ctx lasts (Start).
func Load(ctx context.Context, log logr.Logger, path string) (*rest.Config, error) {
	if path == "" {
		path = os.Getenv("KUBECONFIG")
	}
	if path != "" {
		return clientcmd.BuildConfigFromFlags("", path)
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, err
	}
	return cfg, Start(ctx, log, cfg)
}

// Start installs a Router in cfg, an in-cluster config, and keeps it learning the API
// server's addresses until ctx ends; see Install and Learn.
func Start(ctx context.Context, log logr.Logger, cfg *rest.Config) error {
	r := Install(cfg)
	if r == nil {
		return nil
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	go r.Learn(ctx, log, kube)
	return nil
}

// New returns a Router for connections to service (host:port) that dials with dial.
func New(service string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *Router {
	return &Router{service: service, dial: dial, now: time.Now, failed: map[string]time.Time{}, stale: make(chan struct{}, 1)}
}

// Set replaces the direct addresses (host:port); an empty set changes nothing.
func (r *Router) Set(addrs []string) {
	if len(addrs) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.direct = slices.Clone(addrs)
}

// Direct returns the direct addresses known.
func (r *Router) Direct() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.direct)
}

// order is the addresses to try for the service, best first: the direct ones that did
// not fail lately, then the ClusterIP, then those that did.
func (r *Router) order() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	var good, bad []string
	for _, a := range r.direct {
		if t, ok := r.failed[a]; ok && now.Sub(t) < distrust {
			bad = append(bad, a)
			continue
		}
		good = append(good, a)
	}
	return append(append(good, r.service), bad...)
}

// markStale wakes Learn to read the addresses again.
func (r *Router) markStale() {
	select {
	case r.stale <- struct{}{}:
	default:
	}
}

func (r *Router) noteFailure(addr string, failed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if failed {
		r.failed[addr] = r.now()
	} else {
		delete(r.failed, addr)
	}
}

// DialContext dials addr; a connection to the service's ClusterIP goes to the API
// server's own addresses first, in order, each but the last tried for attemptTimeout,
// and the ClusterIP is among them as the fallback.
func (r *Router) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if addr != r.service {
		return r.dial(ctx, network, addr)
	}
	var errs []error
	addrs := r.order()
	direct, directFailed := len(addrs)-1, 0
	for i, a := range addrs {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if i < len(addrs)-1 {
			actx, cancel = context.WithTimeout(ctx, attemptTimeout)
		}
		c, err := r.dial(actx, network, a)
		cancel()
		if a != r.service {
			r.noteFailure(a, err != nil)
			if err != nil {
				directFailed++
			}
		}
		if err == nil {
			if direct > 0 && directFailed == direct {
				r.markStale() // only the ClusterIP answered: the addresses may have changed
			}
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	// Nothing answered: the API server is away, not one address. Distrusting them would
	// put the ClusterIP first when it returns, while kube-proxy may still not route it.
	for _, a := range addrs {
		if a != r.service {
			r.noteFailure(a, false)
		}
	}
	if direct > 0 && directFailed == direct {
		r.markStale()
	}
	return nil, errors.Join(errs...)
}

// Learn reads the API server's published addresses into r at once, then every
// refresh, and sooner (at most every minRefresh) when none of them answered a dial,
// until ctx ends. Without the right to read them (an older render's RBAC) it logs that
// once and stops: the ClusterIP alone serves, as before.
func (r *Router) Learn(ctx context.Context, log logr.Logger, kube kubernetes.Interface) {
	last := time.Time{}
	for {
		if wait := minRefresh - time.Since(last); !last.IsZero() && wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		last = time.Now()
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := kube.DiscoveryV1().EndpointSlices(metav1.NamespaceDefault).Get(rctx, ServiceName, metav1.GetOptions{})
		cancel()
		switch {
		case err == nil:
			if addrs := Addresses(s); !slices.Equal(addrs, r.Direct()) && len(addrs) > 0 {
				log.Info("Reaching the API server at its own addresses", "addresses", addrs, "service", r.service)
				r.Set(addrs)
			}
		case apierrors.IsForbidden(err) || apierrors.IsNotFound(err):
			log.Info("Cannot read the API server's own addresses; reaching it through its ClusterIP only", "service", r.service, "error", err.Error())
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-r.stale:
		case <-time.After(refresh):
		}
	}
}

// Addresses returns the ready addresses of an API server EndpointSlice as host:port,
// on its https port, sorted.
func Addresses(s *discoveryv1.EndpointSlice) []string {
	port := -1
	for _, p := range s.Ports {
		if p.Port == nil {
			continue
		}
		if port < 0 || (p.Name != nil && *p.Name == "https") {
			port = int(*p.Port)
		}
	}
	if port < 0 {
		return nil
	}
	var out []string
	for _, e := range s.Endpoints {
		if e.Conditions.Ready != nil && !*e.Conditions.Ready {
			continue
		}
		for _, a := range e.Addresses {
			if _, err := netip.ParseAddr(a); err == nil {
				out = append(out, net.JoinHostPort(a, strconv.Itoa(port)))
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
