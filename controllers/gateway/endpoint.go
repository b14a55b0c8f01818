package gateway

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/agent"
)

// nodeAddrs finds the addresses to publish: the public one (annotation or
// ExternalIP), the private one the node sends from towards it, the health-check one.
func (g *Gateway) nodeAddrs(node *corev1.Node) (agent.NodeAddrs, error) {
	var a agent.NodeAddrs
	var err error
	if a.HealthCheck, err = agent.HealthCheckIPs(node); err != nil {
		return a, err
	}
	if a.Public, err = agent.PublicIPs(node); err != nil {
		return a, err
	}
	for _, pub := range a.Public {
		if src, ok := sourceFor(pub); ok && !slices.Contains(a.Private, src) {
			a.Private = append(a.Private, src)
		}
	}
	if len(a.Private) == 0 {
		ip, ok := agent.InternalIP(node)
		if !ok {
			return a, fmt.Errorf("node %s has no InternalIP", node.Name)
		}
		a.Private = []netip.Addr{ip}
	}
	return a, nil
}

// sourceFor returns the local address the kernel picks to send to dst: dst itself
// when it is local (no NAT), else the node's side of a NAT. Connecting a UDP socket
// sends nothing.
func sourceFor(dst netip.Addr) (netip.Addr, bool) {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 9)))
	if err != nil {
		return netip.Addr{}, false
	}
	defer c.Close()
	ap := c.LocalAddr().(*net.UDPAddr).AddrPort()
	return ap.Addr().Unmap(), true
}

func (g *Gateway) publishEndpoint(ctx context.Context, spec mcnetv1.EndpointSpec) error {
	key := client.ObjectKey{Namespace: g.opts.Namespace, Name: g.local.ClusterID}
	var ep mcnetv1.Endpoint
	err := g.client.Get(ctx, key, &ep)
	for retried := false; ; retried = true {
		switch {
		case apierrors.IsNotFound(err):
			ep = mcnetv1.Endpoint{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
			ep.Labels, ep.Spec = map[string]string{mcnetv1.ClusterLabel: g.local.ClusterID}, spec
			if err = g.client.Create(ctx, &ep); err != nil {
				err = fmt.Errorf("create Endpoint: %w", err)
			}
		case err != nil:
			return err
		case apiequality.Semantic.DeepEqual(ep.Spec, spec) && ep.Labels[mcnetv1.ClusterLabel] == g.local.ClusterID:
			return nil
		default:
			ep.Spec = spec
			if ep.Labels == nil {
				ep.Labels = map[string]string{}
			}
			ep.Labels[mcnetv1.ClusterLabel] = g.local.ClusterID
			if err = g.client.Update(ctx, &ep); err != nil {
				err = fmt.Errorf("update Endpoint: %w", err)
			}
		}
		if err == nil {
			g.log.Info("Published Endpoint", "privateIPs", spec.PrivateIPs, "publicIPs", spec.PublicIPs)
			return nil
		}
		if retried || !(apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)) {
			return err
		}
		// The cache lags behind the API server (for up to a minute after an outage,
		// while informers relist): once more on the live object.
		err = g.direct.Get(ctx, key, &ep)
	}
}
