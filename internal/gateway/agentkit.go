package gateway

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"slices"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/membership"
	"github.com/mcnet-io/mcnet/internal/patient"
	"github.com/mcnet-io/mcnet/internal/probe"
)

// NewCache returns the cache of mcnet's namespace that the gateway and the route agent
// read from, and a client reading through it. Its informers wait out an API server
// outage instead of backing off for up to a minute. Nodes are cached with only the
// fields the agents read (SlimNode): every node caches every Node, so what a kubelet
// reports (images, conditions, heartbeats) would cost each agent O(nodes) of it. byObject
// narrows more kinds (a field selector, a transform).
func (o *Common) NewCache(cfg *rest.Config, byObject ...map[client.Object]cache.ByObject) (cache.Cache, client.Client, error) {
	informers, err := patient.ForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	scheme := Scheme()
	by := map[client.Object]cache.ByObject{&corev1.Node{}: {Transform: SlimNode}}
	for _, m := range byObject {
		maps.Copy(by, m)
	}
	c, err := cache.New(cfg, cache.Options{
		Scheme:            scheme,
		DefaultNamespaces: map[string]cache.Config{o.Namespace: {}},
		NewInformer:       informers,
		ByObject:          by,
		// Nobody reads managedFields; they are often the larger part of an object.
		DefaultTransform: cache.TransformStripManagedFields(),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("cache: %w", err)
	}
	cl, err := client.New(cfg, client.Options{Scheme: scheme, Cache: &client.CacheOptions{Reader: c}})
	if err != nil {
		return nil, nil, fmt.Errorf("client: %w", err)
	}
	return c, cl, nil
}

// SlimNode keeps of a Node what the gateway and route agent read: its name, labels and
// annotations (gateway selector, public and health-check addresses), pod CIDRs and
// addresses. It is a cache transform (cache.ByObject.Transform).
func SlimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	return &corev1.Node{
		TypeMeta: n.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion, Generation: n.Generation,
			Labels: n.Labels, Annotations: n.Annotations, DeletionTimestamp: n.DeletionTimestamp,
		},
		Spec:   corev1.NodeSpec{PodCIDR: n.Spec.PodCIDR, PodCIDRs: n.Spec.PodCIDRs},
		Status: corev1.NodeStatus{Addresses: n.Status.Addresses},
	}, nil
}

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
