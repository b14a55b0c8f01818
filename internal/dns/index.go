// Package dns is mcnet's authoritative DNS server for the clusterset domain (by default
// clusterset.local). It answers from an in-memory Index of the services imported into
// the local cluster and of the health of the cables to remote clusters:
//
//	<svc>.<ns>.svc.<domain>                     A/AAAA: the ClusterSetIP (see below);
//	                                            headless: every ready pod of healthy clusters
//	<cluster>.<svc>.<ns>.svc.<domain>           that cluster's ClusterIP or ready pods, always
//	<hostname>.<cluster>.<svc>.<ns>.svc.<domain> one pod of a headless service; pods without
//	                                            a hostname are named by their dashed address
//	_<port>._<proto>.[<cluster>.]<svc>.<ns>.svc.<domain>  SRV for named ports
//	<svc>.<ns>.svc.<domain> SRV                 every named port (one record per number and target)
//	dns-version.<domain>                        TXT: the Multicluster DNS schema version, 1.0.0
//	<domain>                                    SOA and NS
//
// A headless service with no ready pod in a cluster that may answer has no name: NXDOMAIN.
//
// For a ClusterSetIP service the answer is the import's ClusterSetIP (spec.ips), a VIP
// whose endpoints controllers/serviceimport chooses: the local cluster when it has ready
// endpoints, otherwise the connected remote clusters nearest by RTT. Until the VIP is
// allocated the answer is a single cluster's ClusterIP, chosen by the same rule: the
// local cluster when it has ready endpoints (its traffic never leaves the cluster),
// otherwise one remote cluster that has ready endpoints and whose cable is connected (as
// the local active Gateway's status says), drawn at random with a weight of 1/RTT so
// that closer clusters answer more often. A cluster whose connection is not connected is
// never chosen: traffic would not reach it. An explicit <cluster>. name (an extension
// the MCS DNS specification does not define) always answers that cluster's ClusterIP,
// healthy or not, so operators can aim at one copy.
//
// Unknown names get NXDOMAIN, names that exist without records of the asked type an empty
// NOERROR; both carry the zone's SOA in the authority section, whose minimum TTL (the
// negative-caching TTL) is the same short TTL as the answers, 5 s by default. Answers are
// short-lived so that a failover reaches clients within seconds. Names outside the domain
// are REFUSED: the server is authoritative only and never recurses.
//
// The server speaks UDP and TCP and EDNS0: a UDP reply fits the client's advertised
// buffer (512 bytes without EDNS0) or is truncated with TC set, so the client retries
// over TCP.
package dns

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/mcnet-io/mcnet/internal/clusterhealth"
)

// Port is one port of an imported service.
type Port struct {
	// Name is the port's name; only named ports have SRV records.
	Name string
	// Protocol is TCP, UDP or SCTP.
	Protocol string
	// Port is the port number clients connect to.
	Port int32
}

// Endpoint is one address set of a cluster's copy of a service: the ClusterIPs of a
// ClusterSetIP service, or one pod of a headless service.
type Endpoint struct {
	// Hostname names a pod of a headless service (StatefulSet pods have one).
	Hostname string
	// Addrs are the endpoint's addresses (one per IP family).
	Addrs []netip.Addr
	// Ready is false while the endpoint (for a ClusterIP: every backing pod) is not ready.
	Ready bool

	raw []net.IP // Addrs in wire form, made once per update rather than per answer
}

// Backend is one cluster's copy of a service.
type Backend struct {
	// Cluster is the source cluster's name.
	Cluster string
	// Endpoints of the cluster.
	Endpoints []Endpoint
	// Ports are the ports endpoints listen on, when they differ from the service's ports
	// (the target ports of a headless service).
	Ports []Port
}

// Service is what the index knows about one imported service.
type Service struct {
	Namespace string
	Name      string
	// Headless services answer with pod addresses; the others with ClusterIPs.
	Headless bool
	// ClusterSetIPs are the import's VIPs (spec.ips), one per IP family; the service's
	// name answers with them. Until they are allocated it answers with one cluster's
	// ClusterIP.
	ClusterSetIPs []netip.Addr
	// Ports are the merged ports of the ServiceImport.
	Ports []Port
	// Backends, one per source cluster.
	Backends []Backend
}

// Health is the state of the local cluster's connection to a remote one.
type Health = clusterhealth.Health

type key struct{ namespace, name string }

// Index is the server's view of the imported services and the clusters' health. It is
// safe for concurrent use; lookups do not block each other.
type Index struct {
	mu         sync.RWMutex
	services   map[key]*entry
	namespaces map[string]int
	health     atomic.Pointer[map[string]Health]
	serial     atomic.Uint32
}

// entry is an immutable, lookup-ready form of a Service.
type entry struct {
	svc *Service
	// byCluster and byHost are built once per update so lookups only read maps.
	byCluster map[string]*Backend
	byHost    map[string]map[string]*Endpoint // cluster -> lower-case hostname -> endpoint
	// vip holds the ClusterSetIPs in wire form, as an always-ready endpoint.
	vip *Endpoint
}

// NewIndex returns an empty index.
func NewIndex() *Index {
	ix := &Index{services: map[key]*entry{}, namespaces: map[string]int{}}
	ix.health.Store(&map[string]Health{})
	ix.serial.Store(1)
	return ix
}

// Set adds or replaces a service.
func (ix *Index) Set(s *Service) {
	e := compile(s)
	k := key{strings.ToLower(s.Namespace), strings.ToLower(s.Name)}
	ix.mu.Lock()
	if _, ok := ix.services[k]; !ok {
		ix.namespaces[k.namespace]++
	}
	ix.services[k] = e
	ix.mu.Unlock()
	ix.serial.Add(1)
}

// Delete removes a service; it is a no-op for unknown ones.
func (ix *Index) Delete(namespace, name string) {
	k := key{strings.ToLower(namespace), strings.ToLower(name)}
	ix.mu.Lock()
	if _, ok := ix.services[k]; ok {
		delete(ix.services, k)
		if ix.namespaces[k.namespace]--; ix.namespaces[k.namespace] <= 0 {
			delete(ix.namespaces, k.namespace)
		}
	}
	ix.mu.Unlock()
	ix.serial.Add(1)
}

// Keys lists the indexed services as namespace/name, sorted.
func (ix *Index) Keys() []string {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	out := make([]string, 0, len(ix.services))
	for k := range ix.services {
		out = append(out, k.namespace+"/"+k.name)
	}
	slices.Sort(out)
	return out
}

// SetHealth replaces the health of every remote cluster and returns the health it
// replaced. Clusters absent from h are unhealthy.
func (ix *Index) SetHealth(h map[string]Health) (prev map[string]Health) {
	h = cloneHealth(h)
	return *ix.health.Swap(&h)
}

func cloneHealth(h map[string]Health) map[string]Health {
	out := make(map[string]Health, len(h))
	for k, v := range h {
		out[k] = v
	}
	return out
}

func (ix *Index) lookup(namespace, name string) *entry {
	ix.mu.RLock()
	e := ix.services[key{namespace, name}]
	ix.mu.RUnlock()
	return e
}

func (ix *Index) hasNamespace(namespace string) bool {
	ix.mu.RLock()
	n := ix.namespaces[namespace]
	ix.mu.RUnlock()
	return n > 0
}

func compile(s *Service) *entry {
	s = cloneService(s)
	e := &entry{svc: s, byCluster: map[string]*Backend{}, byHost: map[string]map[string]*Endpoint{}}
	slices.SortFunc(s.Backends, func(a, b Backend) int { return strings.Compare(a.Cluster, b.Cluster) })
	if len(s.ClusterSetIPs) > 0 && !s.Headless {
		e.vip = &Endpoint{Ready: true}
		for _, a := range s.ClusterSetIPs {
			e.vip.Addrs = append(e.vip.Addrs, a.Unmap())
			e.vip.raw = append(e.vip.raw, a.Unmap().AsSlice())
		}
	}
	for i := range s.Backends {
		b := &s.Backends[i]
		c := strings.ToLower(b.Cluster)
		e.byCluster[c] = b
		hosts := map[string]*Endpoint{}
		for j := range b.Endpoints {
			ep := &b.Endpoints[j]
			ep.raw = make([]net.IP, len(ep.Addrs))
			for k, a := range ep.Addrs {
				ep.Addrs[k] = a.Unmap()
				ep.raw[k] = ep.Addrs[k].AsSlice()
			}
			if ep.Hostname != "" {
				hosts[strings.ToLower(ep.Hostname)] = ep
			}
			// Pods without a hostname are named by their address, as Kubernetes DNS does.
			for _, a := range ep.Addrs {
				hosts[dashed(a)] = ep
			}
		}
		e.byHost[c] = hosts
	}
	return e
}

// dashed writes an address as a DNS label: 10.0.0.1 → 10-0-0-1, fd00::1 → fd00--1.
func dashed(a netip.Addr) string {
	return strings.NewReplacer(".", "-", ":", "-").Replace(a.Unmap().String())
}

func cloneService(s *Service) *Service {
	c := *s
	c.Ports = slices.Clone(s.Ports)
	c.ClusterSetIPs = slices.Clone(s.ClusterSetIPs)
	c.Backends = make([]Backend, len(s.Backends))
	for i, b := range s.Backends {
		b.Ports = slices.Clone(b.Ports)
		eps := make([]Endpoint, len(b.Endpoints))
		for j, ep := range b.Endpoints {
			ep.Addrs = slices.Clone(ep.Addrs)
			eps[j] = ep
		}
		b.Endpoints = eps
		c.Backends[i] = b
	}
	return &c
}
