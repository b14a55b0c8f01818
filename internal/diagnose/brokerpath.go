package diagnose

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/inspect"
	"github.com/mcnet-io/mcnet/internal/probe"
)

// BrokerFromCluster checks that the cluster itself reaches the broker: the route agent
// on the controller's node opens a TCP connection to the broker's address, the path
// the controller's own connection takes. Diagnose may reach the broker by another way
// (the broker cluster's context), and the controller keeps serving its last copy of the
// broker's objects through an outage, so nothing else in the cluster shows that its
// link to the broker is cut.
func BrokerFromCluster(ctx context.Context, c client.Client, s *inspect.Snapshot, agentTimeout time.Duration) []Check {
	id, name := s.ClusterID, "broker is reachable from the cluster"
	if s.Controller == nil {
		return nil
	}
	target, err := brokerAddr(s.Config.Broker.Server)
	if err != nil {
		return []Check{skip("broker", id, name, err.Error())}
	}
	node, err := controllerNode(ctx, c, s)
	if err != nil {
		return []Check{skip("broker", id, name, err.Error())}
	}
	st, err := connectTest(ctx, c, node, target, agentTimeout)
	switch {
	case err != nil:
		return []Check{warn("MCN1407", id, name, "route agent on node %s: %v", node, err)}
	case st.Phase == mcnetv1.TestFailed && probe.ConnectFailed(st.Message):
		return []Check{fail("MCN1103", id, name, "from node %s (the controller's): %s", node, st.Message)}
	}
	// Anything else reached a TCP listener at the broker's address.
	return []Check{ok("broker", id, fmt.Sprintf("%s (node %s to %s)", name, node, target))}
}

// brokerAddr is the broker URL's address and port; the agents do not resolve names.
func brokerAddr(server string) (netip.AddrPort, error) {
	u, err := url.Parse(server)
	if err != nil || u.Host == "" {
		return netip.AddrPort{}, fmt.Errorf("broker server %q is not a URL", server)
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	ap, err := netip.ParseAddrPort(net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("broker server %s is a name; the agents test addresses only", u.Host)
	}
	return ap, nil
}

// controllerNode is the node of a running controller pod.
func controllerNode(ctx context.Context, c client.Client, s *inspect.Snapshot) (string, error) {
	sel := s.Controller.Spec.Selector
	if sel == nil || len(sel.MatchLabels) == 0 {
		return "", fmt.Errorf("Deployment %s has no label selector", inspect.ControllerName)
	}
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(mcnetv1.SystemNamespace), client.MatchingLabels(sel.MatchLabels)); err != nil {
		return "", fmt.Errorf("list controller pods: %w", err)
	}
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning && p.Spec.NodeName != "" && p.DeletionTimestamp == nil {
			return p.Spec.NodeName, nil
		}
	}
	return "", fmt.Errorf("no running %s pod", inspect.ControllerName)
}

// connectTest runs a one-second throughput test from the route agent on node to
// target and returns its final status.
func connectTest(ctx context.Context, c client.Client, node string, target netip.AddrPort, agentTimeout time.Duration) (*mcnetv1.NetworkTestStatus, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	nt := &mcnetv1.NetworkTest{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "mcnet-broker-",
			Namespace:    mcnetv1.SystemNamespace,
			Labels: map[string]string{
				mcnetv1.NodeLabel: node, mcnetv1.AgentLabel: string(mcnetv1.AgentRouteAgent),
				"app.kubernetes.io/managed-by": "kubectl-mcnet",
			},
		},
		Spec: mcnetv1.NetworkTestSpec{
			NodeName: node, Agent: mcnetv1.AgentRouteAgent, Role: mcnetv1.NetworkTestClient,
			Type: mcnetv1.TestThroughput, Session: hex.EncodeToString(b[:]), Target: target.String(),
			Streams: 1, Duration: &metav1.Duration{Duration: time.Second},
		},
	}
	if err := c.Create(ctx, nt); err != nil {
		return nil, fmt.Errorf("create NetworkTest: %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = client.IgnoreNotFound(c.Delete(dctx, nt)) // else the agent deletes it after probe.FinishedTTL
	}()
	var got mcnetv1.NetworkTest
	// The connection times out after 5s; the stream lasts a second.
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, agentTimeout+20*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(nt), &got); err != nil {
			if apierrors.IsNotFound(err) {
				return false, nil
			}
			return false, err
		}
		return got.Status.Phase == mcnetv1.TestSucceeded || got.Status.Phase == mcnetv1.TestFailed, nil
	})
	if err != nil {
		if got.Status.Phase == "" || got.Status.Phase == mcnetv1.TestPending {
			return nil, fmt.Errorf("no agent ran the test within %s (is mcnet-route-agent running there, at a version with NetworkTest support?)", agentTimeout)
		}
		return nil, fmt.Errorf("test still %s: %s", got.Status.Phase, got.Status.Message)
	}
	return &got.Status, nil
}
