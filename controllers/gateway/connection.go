package gateway

import (
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/dataplane"
)

// Event reasons, also used in log messages.
const (
	ReasonConnected        = "Connected"
	ReasonConnectionFailed = "ConnectionFailed"
	ReasonBecameActive     = "BecameActive"
	ReasonBecamePassive    = "BecamePassive"
	ReasonApplyFailed      = "DataplaneApplyFailed"
)

// LostProbesForError is how many probes in a row must go unanswered, and how many
// probe intervals the remote must stay silent, before a connection is reported as an
// error: one lost UDP packet, or a gateway restarting within a second or two, is not
// an outage.
const LostProbesForError = 3

// HandshakeTooOld is when a WireGuard session is surely dead: the protocol rekeys
// every two minutes while traffic flows and persistent keepalives keep it flowing.
const HandshakeTooOld = 3 * time.Minute

// ConnInput is everything known about the connection to one remote cluster.
type ConnInput struct {
	Cluster string
	// Endpoint is the remote's published Endpoint; nil when the cluster is known (a
	// Cluster object) but publishes no active gateway.
	Endpoint *mcnetv1.EndpointSpec
	// EndpointErr says why the Endpoint cannot be used.
	EndpointErr error
	// ApplyErr is the error of the last dataplane Apply, if any.
	ApplyErr error
	// Cable is what the kernel reports about the cable; nil when none is configured.
	Cable *dataplane.CableStatus
	// Probe are the probe statistics of the remote's health-check address.
	Probe ProbeStats
	// ProbeTarget is the address probed, for messages.
	ProbeTarget string
}

// Event is a Kubernetes Event to record on the Gateway.
type Event struct {
	Type, Reason, Message string
}

// NextConnection computes the connection's new state from the previous one (nil at
// first) and returns an Event when its status changed to connected or error.
// Connected only when probes through the tunnel are answered; once connected, it
// takes LostProbesForError lost probes in a row and the remote's silence for
// ProbeStats.DeadAfter to become an error, and not while the hold of a restart the
// remote announced lasts (ProbeStats.Restarting).
func NextConnection(prev *mcnetv1.Connection, in ConnInput, now time.Time) (mcnetv1.Connection, *Event) {
	c := mcnetv1.Connection{Cluster: in.Cluster, Endpoint: in.Endpoint}
	if prev != nil {
		c.LastTransitionTime = prev.LastTransitionTime
	}
	if in.Endpoint != nil {
		c.NAT = len(in.Endpoint.PublicIPs) > 0 && !slices.Equal(in.Endpoint.PublicIPs, in.Endpoint.PrivateIPs)
	}
	if in.Cable != nil {
		c.Cable = mcnetv1.CableDriver(in.Cable.Driver)
		if in.Cable.Endpoint.IsValid() {
			c.UsingIP = in.Cable.Endpoint.Addr().String()
			c.Port = int32(in.Cable.Endpoint.Port())
		}
		c.RxBytes, c.TxBytes = in.Cable.RxBytes, in.Cable.TxBytes
	}
	p := in.Probe
	if answered := p.Sent - p.Lost; answered > 0 {
		c.RTT = &mcnetv1.RTTStats{
			Last: metav1.Duration{Duration: p.Last}, Min: metav1.Duration{Duration: p.Min},
			Avg: metav1.Duration{Duration: p.Avg}, Max: metav1.Duration{Duration: p.Max},
			StdDev: metav1.Duration{Duration: p.StdDev},
		}
	}
	c.LossPercent = p.LossPercent

	switch {
	case in.Endpoint == nil:
		c.Status, c.Message = mcnetv1.ConnectionError, fmt.Sprintf("endpoint missing: cluster %s publishes no active gateway", in.Cluster)
	case in.EndpointErr != nil:
		c.Status, c.Message = mcnetv1.ConnectionError, "endpoint unusable: "+in.EndpointErr.Error()
	case in.ApplyErr != nil:
		c.Status, c.Message = mcnetv1.ConnectionError, "cable not configured: "+in.ApplyErr.Error()
	case len(in.Endpoint.HealthCheckIPs) == 0:
		c.Status, c.Message = mcnetv1.ConnectionError, "remote gateway publishes no health-check IP, so the datapath cannot be verified"
	case p.Restarting() && prev != nil && prev.Status == mcnetv1.Connected && sameEndpoint(prev.Endpoint, in.Endpoint):
		// The remote announced a restart with its cable kept in the kernel: connected
		// through the hold, unless its next process stays silent past it.
		c.Status = mcnetv1.Connected
		why := "remote gateway restarting (announced)"
		if p.OwnRestart {
			why = "not heard from since this gateway restarted"
		}
		c.Message = fmt.Sprintf("%s; its kernel cable stays up; held until %s", why, p.RestartingUntil.UTC().Format(time.RFC3339))
		if c.RTT == nil {
			c.RTT = prev.RTT
		}
	case p.Sent > p.Lost && !p.Down():
		c.Status = mcnetv1.Connected
	case p.Down():
		c.Status, c.Message = mcnetv1.ConnectionError, failureMessage(in, now)
	case prev != nil && prev.Status != "" && sameEndpoint(prev.Endpoint, in.Endpoint):
		// Not enough probes yet (just started, or restarted): keep what was known.
		c.Status, c.Message = prev.Status, prev.Message
		if c.RTT == nil {
			c.RTT = prev.RTT
		}
	default:
		c.Status, c.Message = mcnetv1.Connecting, fmt.Sprintf("waiting for the first probe reply from %s", in.ProbeTarget)
	}

	var ev *Event
	if prev == nil || prev.Status != c.Status {
		c.LastTransitionTime = &metav1.Time{Time: now.Truncate(time.Second)}
		switch c.Status {
		case mcnetv1.Connected:
			ev = &Event{corev1.EventTypeNormal, ReasonConnected, fmt.Sprintf("Connected to cluster %s via %s (rtt %s)", in.Cluster, orDash(c.UsingIP), p.Last.Round(10*time.Microsecond))}
		case mcnetv1.ConnectionError:
			ev = &Event{corev1.EventTypeWarning, ReasonConnectionFailed, fmt.Sprintf("Connection to cluster %s: %s", in.Cluster, c.Message)}
		}
	}
	return c, ev
}

// failureMessage says what is wrong with a connection whose probes go unanswered,
// from the most basic layer up.
func failureMessage(in ConnInput, now time.Time) string {
	// The threshold, not the running silence: the message (and so the status) stays
	// the same for the whole outage.
	lost := fmt.Sprintf("no probe replies from %s for %s", in.ProbeTarget, in.Probe.DeadAfter)
	cable := in.Cable
	switch {
	case cable == nil:
		return "no cable configured to the remote gateway; " + lost
	case cable.Driver == dataplane.DriverWireGuard && cable.LastHandshake.IsZero():
		return fmt.Sprintf("no WireGuard handshake with %s yet (is UDP %d reachable?); %s", cable.Endpoint.Addr(), cable.Endpoint.Port(), lost)
	case cable.Driver == dataplane.DriverWireGuard && now.Sub(cable.LastHandshake) > HandshakeTooOld:
		return fmt.Sprintf("last WireGuard handshake with %s was %s ago; %s", cable.Endpoint.Addr(), now.Sub(cable.LastHandshake).Round(time.Second), lost)
	case cable.Driver == dataplane.DriverWireGuard:
		return fmt.Sprintf("WireGuard handshake with %s is recent but %s (routes or packet filter inside the remote cluster?)", cable.Endpoint.Addr(), lost)
	default:
		return fmt.Sprintf("%s through the VXLAN cable to %s (is UDP %d reachable?)", lost, cable.Endpoint.Addr(), cable.Endpoint.Port())
	}
}

func sameEndpoint(a, b *mcnetv1.EndpointSpec) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Hostname == b.Hostname && a.PublicKey == b.PublicKey && slices.Equal(a.HealthCheckIPs, b.HealthCheckIPs)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
