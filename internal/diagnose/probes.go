package diagnose

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/inspect"
	"github.com/mcnet-io/mcnet/internal/netest"
)

// Pair is a client cluster and a server cluster with their clients.
type Pair struct {
	A, B         *inspect.Snapshot
	ClientA      client.Client
	ClientB      client.Client
	AgentTimeout time.Duration
}

// Probe asks the agents to measure from A's active gateway to B's: the path MTU
// through the tunnel and, when the tunnel is down, whether B's gateway answers UDP on
// the underlay at all — which tells a blocked cable port from a dead gateway.
func Probe(ctx context.Context, p Pair) []Check {
	a, b := p.A, p.B
	name := fmt.Sprintf("path MTU to %s", b.ClusterID)
	ga, gb := a.ActiveGateways(), b.ActiveGateways()
	if len(ga) != 1 || len(gb) != 1 {
		return []Check{skip("connections", a.ClusterID, name, "needs one active gateway on both sides")}
	}
	epB := b.Endpoint(b.ClusterID)
	if epB == nil {
		return []Check{skip("connections", a.ClusterID, name, "no Endpoint of "+b.ClusterID)}
	}
	var conn *mcnetv1.Connection
	for i := range ga[0].Status.Connections {
		if ga[0].Status.Connections[i].Cluster == b.ClusterID {
			conn = &ga[0].Status.Connections[i]
		}
	}
	server := netest.Side{Client: p.ClientB, Node: gb[0].Name, Agent: mcnetv1.AgentGateway, Prefer: addrs(epB.Spec.HealthCheckIPs)}
	cl := netest.Side{Client: p.ClientA, Node: ga[0].Name, Agent: mcnetv1.AgentGateway}
	spec := netest.Spec{AgentTimeout: p.AgentTimeout}
	if conn == nil || conn.Status != mcnetv1.Connected {
		// Underlay: B's gateway at the address A's cable sends to.
		under := addrs(epB.Spec.PublicIPs)
		if conn != nil && conn.UsingIP != "" {
			under = addrs([]string{conn.UsingIP})
		}
		if len(under) == 0 {
			under = addrs(epB.Spec.PrivateIPs)
		}
		server.Prefer, spec.Type, spec.Count = under, mcnetv1.TestUDP, 5
		st, err := netest.Run(ctx, server, cl, spec)
		pname := fmt.Sprintf("cable port to %s is reachable", b.ClusterID)
		switch {
		case errors.Is(err, netest.ErrNoAgent):
			return []Check{warn("MCN1407", a.ClusterID, pname, "%v", err)}
		case err != nil:
			return []Check{warn("MCN1407", a.ClusterID, pname, "%v", err)}
		case st.Phase == mcnetv1.TestSucceeded:
			// The cable the gateway reports running; what the pair would choose only when
			// it reports none (no cable configured, or an older gateway).
			driver, port := mcnetv1.CableTo(ga[0].Status.Cable, &epB.Spec)
			if port == 0 {
				port = mcnetv1.DefaultCablePort(driver)
			}
			if conn != nil && conn.Cable != "" {
				driver, port = conn.Cable, conn.Port
			}
			return []Check{fail("MCN1405", a.ClusterID, pname, "gateway %s answers UDP from %s on the underlay, but nothing passes the %s cable on UDP %d", gb[0].Name, ga[0].Name, driver, port)}
		default:
			return []Check{skip("connections", a.ClusterID, pname, fmt.Sprintf("gateway %s does not answer UDP on the underlay either (%s): the WAN path or the remote gateway is down", gb[0].Name, st.Message))}
		}
	}
	// Through the tunnel: from an address of A's pod CIDRs (the health-check IP), as
	// only those pass the cables; the node's own address would never be answered.
	cl.Within = podCIDRs(a)
	spec.Type = mcnetv1.TestMTU
	st, err := netest.Run(ctx, server, cl, spec)
	switch {
	case err != nil:
		return []Check{warn("MCN1407", a.ClusterID, name, "%v", err)}
	case st.MTU == nil || st.Phase != mcnetv1.TestSucceeded:
		return []Check{fail("MCN1406", a.ClusterID, name, "probing failed: %s", st.Message)}
	case st.MTU.PathMTU < st.MTU.InterfaceMTU:
		return []Check{fail("MCN1406", a.ClusterID, name, "packets up to %d bytes cross the tunnel, but %s sends up to %d", st.MTU.PathMTU, routeName(st.MTU.Interface), st.MTU.InterfaceMTU)}
	}
	return []Check{ok("connections", a.ClusterID, fmt.Sprintf("%s is %d (%s)", name, st.MTU.PathMTU, routeName(st.MTU.Interface)))}
}

func addrs(ss []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// podCIDRs are the pod CIDRs the cluster announces.
func podCIDRs(s *inspect.Snapshot) []netip.Prefix {
	self := s.Self()
	if self == nil {
		return nil
	}
	var out []netip.Prefix
	for _, c := range self.Spec.PodCIDRs {
		if p, err := netip.ParsePrefix(c); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

func routeName(ifName string) string {
	if ifName == "" {
		return "the route"
	}
	return ifName
}
