package dns

import (
	"strings"

	"github.com/miekg/dns"
)

// The records of one answer: how a query of the clusterset domain becomes A, AAAA,
// SRV and SOA records from the index (the Multicluster DNS specification).

// splitLabels splits a dotted name into labels, appending to dst; it fails for names
// with more labels than dst can hold.
func splitLabels(name string, dst []string) ([]string, bool) {
	for {
		if len(dst) == cap(dst) {
			return dst, false
		}
		i := strings.IndexByte(name, '.')
		if i < 0 {
			return append(dst, name), true
		}
		dst = append(dst, name[:i])
		name = name[i+1:]
	}
}

func (q *query) hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: q.s.TTL}
}

func (q *query) soa() dns.RR {
	return &dns.SOA{
		Hdr: q.hdr(q.s.zone, dns.TypeSOA), Ns: "ns.dns." + q.s.zone, Mbox: "hostmaster." + q.s.zone,
		Serial: q.s.Index.serial.Load(), Refresh: 60, Retry: 10, Expire: 3600, Minttl: q.s.TTL,
	}
}

func (q *query) nxdomain() {
	q.m.Rcode = dns.RcodeNameError
	q.m.Ns = append(q.m.Ns, q.soa())
}

func (q *query) nodata() { q.m.Ns = append(q.m.Ns, q.soa()) }

// done adds the SOA when the answer is empty: the name exists, the type does not.
func (q *query) done() {
	if len(q.m.Answer) == 0 {
		q.nodata()
	}
}

func (q *query) apex() {
	switch q.qtype {
	case dns.TypeSOA:
		q.m.Answer = append(q.m.Answer, q.soa())
	case dns.TypeNS:
		q.m.Answer = append(q.m.Answer, &dns.NS{Hdr: q.hdr(q.name, dns.TypeNS), Ns: "ns.dns." + q.s.zone})
	case dns.TypeANY:
		q.m.Answer = append(q.m.Answer, q.soa(), &dns.NS{Hdr: q.hdr(q.name, dns.TypeNS), Ns: "ns.dns." + q.s.zone})
	}
	q.done()
}

// SchemaVersion is the version of the Multicluster DNS specification (KEP-1645's
// specification.md) the server follows, served as TXT at dns-version.<domain>.
const SchemaVersion = "1.0.0"

func (q *query) version() {
	if q.qtype == dns.TypeTXT || q.qtype == dns.TypeANY {
		q.m.Answer = append(q.m.Answer, &dns.TXT{Hdr: q.hdr(q.name, dns.TypeTXT), Txt: []string{SchemaVersion}})
	}
	q.done()
}

// wants says whether the query asks for addresses of a family.
func (q *query) wants(fam int) bool {
	switch q.qtype {
	case dns.TypeA:
		return fam == 4
	case dns.TypeAAAA:
		return fam == 6
	case dns.TypeANY:
		return true
	}
	return false
}

// addr appends a record for ep's i-th address to sec if the query asks for its family.
func (q *query) addr(sec []dns.RR, name string, ep *Endpoint, i int, filter bool) []dns.RR {
	a := ep.Addrs[i]
	if filter && !q.wants(family(a)) {
		return sec
	}
	if family(a) == 4 {
		return append(sec, &dns.A{Hdr: q.hdr(name, dns.TypeA), A: ep.raw[i]})
	}
	return append(sec, &dns.AAAA{Hdr: q.hdr(name, dns.TypeAAAA), AAAA: ep.raw[i]})
}

func (q *query) endpoint(ep *Endpoint) {
	if ep.Ready {
		for i := range ep.Addrs {
			q.m.Answer = q.addr(q.m.Answer, q.name, ep, i, true)
		}
	}
	q.done()
}

// service answers <svc>.<ns>.svc.<domain>.
func (q *query) service(e *entry) {
	if e.svc.Headless && !q.anyReady(e) {
		// A headless service's name exists only through its ready pods.
		q.nxdomain()
		return
	}
	if q.qtype == dns.TypeSRV {
		q.srv(e, nil, "", "")
		return
	}
	if e.svc.Headless {
		for i := range e.svc.Backends {
			b := &e.svc.Backends[i]
			if healthy(b.Cluster, q.s.LocalCluster, q.health) {
				q.readyAddrs(b)
			}
		}
		q.done()
		return
	}
	if e.vip != nil {
		for i := range e.vip.Addrs {
			q.m.Answer = q.addr(q.m.Answer, q.name, e.vip, i, true)
		}
		q.done()
		return
	}
	for _, fam := range []int{4, 6} {
		if !q.wants(fam) {
			continue
		}
		if b := choose(e.svc.Backends, q.s.LocalCluster, q.health, fam, q.s.random()); b != nil {
			q.familyAddrs(b, fam, true)
		}
	}
	q.done()
}

// anyReady says whether a cluster that may answer for the service has a ready endpoint.
func (q *query) anyReady(e *entry) bool {
	for i := range e.svc.Backends {
		b := &e.svc.Backends[i]
		if healthy(b.Cluster, q.s.LocalCluster, q.health) && (hasReady(b, 4) || hasReady(b, 6)) {
			return true
		}
	}
	return false
}

func (q *query) readyAddrs(b *Backend) {
	for i := range b.Endpoints {
		if ep := &b.Endpoints[i]; ep.Ready {
			for j := range ep.Addrs {
				q.m.Answer = q.addr(q.m.Answer, q.name, ep, j, true)
			}
		}
	}
}

func (q *query) familyAddrs(b *Backend, fam int, readyOnly bool) {
	for i := range b.Endpoints {
		if readyOnly && !b.Endpoints[i].Ready {
			continue
		}
		for j, a := range b.Endpoints[i].Addrs {
			if family(a) == fam {
				q.m.Answer = q.addr(q.m.Answer, q.name, &b.Endpoints[i], j, false)
			}
		}
	}
}

// cluster answers <cluster>.<svc>.<ns>.svc.<domain>: that cluster, whatever its health.
func (q *query) cluster(e *entry, b *Backend) {
	switch {
	case q.qtype == dns.TypeSRV:
		q.srv(e, b, "", "")
		return
	case e.svc.Headless:
		q.readyAddrs(b)
	default:
		for _, fam := range []int{4, 6} {
			if q.wants(fam) {
				q.familyAddrs(b, fam, false)
			}
		}
	}
	q.done()
}

// srv answers SRV queries: for every named port matching port and proto (all named
// ports when port is empty), the service's name or, for headless services, every ready
// pod's, restricted to one cluster when b is set.
func (q *query) srv(e *entry, b *Backend, port, proto string) {
	if q.qtype != dns.TypeSRV && q.qtype != dns.TypeANY {
		q.done()
		return
	}
	base := strings.ToLower(e.svc.Name + "." + e.svc.Namespace + ".svc." + q.s.zone)
	matched := false
	for _, p := range e.svc.Ports {
		if p.Name == "" || (port != "" && (!strings.EqualFold(p.Name, port) || !strings.EqualFold(p.Protocol, proto))) {
			continue
		}
		matched = true
		if !e.svc.Headless {
			target := base
			if b != nil {
				target = strings.ToLower(b.Cluster) + "." + base
			}
			q.addSRV(uint16(p.Port), target)
			continue
		}
		for i := range e.svc.Backends {
			bb := &e.svc.Backends[i]
			if (b != nil && bb != b) || (b == nil && !healthy(bb.Cluster, q.s.LocalCluster, q.health)) {
				continue
			}
			pn := backendPort(bb, p)
			for j := range bb.Endpoints {
				ep := &bb.Endpoints[j]
				if !ep.Ready || len(ep.Addrs) == 0 {
					continue
				}
				host := ep.Hostname
				if host == "" {
					host = dashed(ep.Addrs[0])
				}
				target := strings.ToLower(host + "." + bb.Cluster + "." + base)
				if !q.addSRV(uint16(pn), target) {
					continue
				}
				for k := range ep.Addrs {
					q.m.Extra = q.addr(q.m.Extra, target, ep, k, false)
				}
			}
		}
	}
	if port != "" && !matched {
		q.nxdomain()
		return
	}
	q.done()
}

// addSRV appends an SRV record unless one with the same port and target is there: a
// service's TCP and UDP ports of one number (DNS on 53, say) are one record, as
// Kubernetes DNS answers them. It says whether it appended.
func (q *query) addSRV(port uint16, target string) bool {
	for _, rr := range q.m.Answer {
		if srv, ok := rr.(*dns.SRV); ok && srv.Port == port && srv.Target == target {
			return false
		}
	}
	q.m.Answer = append(q.m.Answer, &dns.SRV{Hdr: q.hdr(q.name, dns.TypeSRV), Priority: 0, Weight: 100, Port: port, Target: target})
	return true
}

// backendPort is the port a cluster's pods listen on for a service port.
func backendPort(b *Backend, p Port) int32 {
	for _, bp := range b.Ports {
		if bp.Name == p.Name && strings.EqualFold(bp.Protocol, p.Protocol) {
			return bp.Port
		}
	}
	return p.Port
}
