// Package netest runs one measurement between two clusters through NetworkTest
// objects: a Server in one cluster, a Client in the other, both served by the mcnet
// agents already running on the chosen nodes. Benchmark and diagnose use it.
package netest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

// ErrNoAgent means no agent picked a test up: the component is not running on the
// node, or is a version without NetworkTest support.
var ErrNoAgent = errors.New("no mcnet agent answered")

// Side is one end of a measurement.
type Side struct {
	Client client.Client
	Node   string
	Agent  mcnetv1.Agent
	// Addresses are the server addresses to prefer, in order (e.g. the gateway's
	// health-check IP); the first the server listens on is used.
	Prefer []netip.Addr
	// Within restricts the server address to these networks when Prefer has none
	// (e.g. the server cluster's pod CIDRs), and is the client's source range.
	Within []netip.Prefix
}

// Spec is what to measure.
type Spec struct {
	Type     mcnetv1.NetworkTestType
	Duration time.Duration
	Streams  int32
	Count    int32
	Interval time.Duration
	// AgentTimeout is how long to wait for an agent to pick a test up.
	AgentTimeout time.Duration
}

// Run measures from client to server and returns the client's final status.
func Run(ctx context.Context, server, cl Side, spec Spec) (*mcnetv1.NetworkTestStatus, error) {
	session, err := randomHex(16)
	if err != nil {
		return nil, err
	}
	agentTimeout := spec.AgentTimeout
	if agentTimeout <= 0 {
		agentTimeout = 15 * time.Second
	}
	srv := newTest(server, mcnetv1.NetworkTestServer, spec.Type, session)
	srv.Spec.Duration = &metav1.Duration{Duration: spec.Duration + 2*time.Minute}
	if err := server.Client.Create(ctx, srv); err != nil {
		return nil, fmt.Errorf("create server NetworkTest on node %s: %w", server.Node, err)
	}
	defer cleanup(server.Client, srv)
	st, err := waitPhase(ctx, server.Client, srv, agentTimeout, mcnetv1.TestReady)
	if err != nil {
		return nil, fmt.Errorf("server on node %s (%s): %w", server.Node, server.Agent, err)
	}
	target, err := pickAddress(st, server)
	if err != nil {
		return nil, err
	}
	clt := newTest(cl, mcnetv1.NetworkTestClient, spec.Type, session)
	clt.Spec.Target = netip.AddrPortFrom(target, uint16(st.Port)).String()
	if spec.Duration > 0 {
		clt.Spec.Duration = &metav1.Duration{Duration: spec.Duration}
	}
	if spec.Interval > 0 {
		clt.Spec.Interval = &metav1.Duration{Duration: spec.Interval}
	}
	clt.Spec.Streams, clt.Spec.Count = spec.Streams, spec.Count
	for _, p := range cl.Within {
		clt.Spec.SourceCIDRs = append(clt.Spec.SourceCIDRs, p.String())
	}
	if err := cl.Client.Create(ctx, clt); err != nil {
		return nil, fmt.Errorf("create client NetworkTest on node %s: %w", cl.Node, err)
	}
	defer cleanup(cl.Client, clt)
	if _, err := waitPhase(ctx, cl.Client, clt, agentTimeout, mcnetv1.TestRunning, mcnetv1.TestSucceeded, mcnetv1.TestFailed); err != nil {
		return nil, fmt.Errorf("client on node %s (%s): %w", cl.Node, cl.Agent, err)
	}
	budget := spec.Duration + 60*time.Second
	return waitPhase(ctx, cl.Client, clt, budget, mcnetv1.TestSucceeded, mcnetv1.TestFailed)
}

func newTest(s Side, role mcnetv1.NetworkTestRole, typ mcnetv1.NetworkTestType, session string) *mcnetv1.NetworkTest {
	return &mcnetv1.NetworkTest{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "mcnet-" + string(typ) + "-",
			Namespace:    mcnetv1.SystemNamespace,
			Labels: map[string]string{
				mcnetv1.NodeLabel: s.Node, mcnetv1.AgentLabel: string(s.Agent),
				"app.kubernetes.io/managed-by": "kubectl-mcnet",
			},
		},
		Spec: mcnetv1.NetworkTestSpec{NodeName: s.Node, Agent: s.Agent, Role: role, Type: typ, Session: session},
	}
}

// waitPhase polls until the test reaches one of phases (a failure ends it too).
func waitPhase(ctx context.Context, c client.Client, nt *mcnetv1.NetworkTest, timeout time.Duration, phases ...mcnetv1.NetworkTestPhase) (*mcnetv1.NetworkTestStatus, error) {
	var got mcnetv1.NetworkTest
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(nt), &got); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		for _, p := range phases {
			if got.Status.Phase == p {
				return true, nil
			}
		}
		return got.Status.Phase == mcnetv1.TestFailed, nil
	})
	if err != nil {
		if got.Status.Phase == "" || got.Status.Phase == mcnetv1.TestPending {
			return nil, fmt.Errorf("%w within %s (is mcnet-%s running on the node, at a version with NetworkTest support?)", ErrNoAgent, timeout, nt.Spec.Agent)
		}
		return nil, fmt.Errorf("still %s after %s: %s", got.Status.Phase, timeout, got.Status.Message)
	}
	if got.Status.Phase == mcnetv1.TestFailed && nt.Spec.Role == mcnetv1.NetworkTestServer {
		return nil, errors.New(got.Status.Message)
	}
	return &got.Status, nil
}

func pickAddress(st *mcnetv1.NetworkTestStatus, s Side) (netip.Addr, error) {
	var have []netip.Addr
	for _, a := range st.Addresses {
		if ip, err := netip.ParseAddr(a); err == nil {
			have = append(have, ip)
		}
	}
	for _, p := range s.Prefer {
		for _, a := range have {
			if a == p {
				return a, nil
			}
		}
	}
	for _, p := range s.Within {
		for _, a := range have {
			if p.Contains(a) {
				return a, nil
			}
		}
	}
	if len(s.Prefer) > 0 && len(s.Within) == 0 {
		return s.Prefer[0], nil // e.g. an address the agent does not list but the node answers on
	}
	return netip.Addr{}, fmt.Errorf("node %s has no address routed across clusters (listens on %v; want one of %v or inside %v)", s.Node, st.Addresses, s.Prefer, s.Within)
}

func cleanup(c client.Client, nt *mcnetv1.NetworkTest) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Delete(ctx, nt); err != nil && !apierrors.IsNotFound(err) {
		_ = err // left behind; the agent deletes finished tests after probe.FinishedTTL
	}
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random session: %w", err)
	}
	return hex.EncodeToString(b), nil
}
