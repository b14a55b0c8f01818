package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/membership"
	"github.com/mcnet-io/mcnet/internal/probe"
)

// ServeNetworkTests answers, in the background until ctx ends, the NetworkTests
// (benchmarks, diagnose probes) addressed to this node and agent.
func (o *Common) ServeNetworkTests(ctx context.Context, log logr.Logger, cfg *rest.Config, agent mcnetv1.Agent) error {
	wc, err := client.NewWithWatch(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		return err
	}
	go func() {
		_ = probe.RunAgent(logr.NewContext(ctx, log), wc, probe.AgentOptions{
			Namespace: o.Namespace, NodeName: o.NodeName, Agent: agent,
			AllowTarget: func(ctx context.Context, a netip.Addr) error { return o.fleetAddress(ctx, wc, a) },
		})
	}()
	return nil
}

// fleetAddress says whether a NetworkTest may measure toward a: an address inside a
// member's allocation (the fleet table from Git), a gateway address a member publishes
// in its Endpoint, or the broker's API server. Loopback, link-local and unspecified
// addresses never are, whoever publishes them.
func (o *Common) fleetAddress(ctx context.Context, r client.Reader, a netip.Addr) error {
	if a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsUnspecified() || a.IsMulticast() {
		return fmt.Errorf("%s is a loopback, link-local, multicast or unspecified address", a)
	}
	table, err := membership.Load(ctx, r, o.Config.Fleet)
	if err != nil {
		return err
	}
	if table.InFleet(a) {
		return nil
	}
	var eps mcnetv1.EndpointList
	if err := r.List(ctx, &eps, client.InNamespace(o.Namespace)); err != nil {
		return fmt.Errorf("list Endpoints: %w", err)
	}
	for _, ep := range eps.Items {
		if _, ok := table.Member(ep.Spec.ClusterID); !ok {
			continue
		}
		for _, s := range append(slices.Clone(ep.Spec.PrivateIPs), ep.Spec.PublicIPs...) {
			if ip, err := netip.ParseAddr(s); err == nil && ip.Unmap() == a {
				return nil
			}
		}
	}
	if u, err := url.Parse(o.Config.Broker.Server); err == nil && u.Hostname() != "" {
		ips, _ := net.DefaultResolver.LookupNetIP(ctx, "ip", u.Hostname())
		for _, ip := range ips {
			if ip.Unmap() == a {
				return nil
			}
		}
	}
	return fmt.Errorf("outside the allocations of fleet %s, no member's gateway and not the broker", table.Name())
}
