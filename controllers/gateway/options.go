package gateway

import (
	"fmt"
	"time"

	"github.com/spf13/pflag"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/controllers/gateway/election"
	"github.com/mcnet-io/mcnet/internal/agent"
)

// Options configure a gateway.
type Options struct {
	agent.Common
	MetricsBindAddress string
	// ProbeAddress serves /healthz and /readyz ("0" disables). Ready means the last
	// Reconcile succeeded and its kernel state applied, on the active gateway and on a
	// standby alike: a new version that cannot do its job never becomes ready, and the
	// DaemonSet's rolling update stops at its first node.
	ProbeAddress string
	// Lease timings: a standby takes over at most LeaseDuration+RetryPeriod after the
	// active gateway stops renewing; the active one gives up after RenewDeadline.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// RestartGrace is how long the Lease is held for a restarting active gateway: a
	// SIGTERM that is not an uninstall renews it once for this long instead of
	// releasing it, and the restarted process takes it back at once.
	RestartGrace time.Duration
	// ProbeInterval is how often each remote gateway is probed, and how often the
	// gateway reconciles without an event.
	ProbeInterval time.Duration
	// StatusInterval is how often the Gateway status is renewed when nothing changed
	// (its heartbeat, status.renewTime, with fresh RTT figures); changes are written at
	// once. At most mcnetv1.GatewayHeartbeat: readers expire a status
	// mcnetv1.GatewayExpiry after its renewal.
	StatusInterval time.Duration
}

// AddFlags registers the gateway's flags, the shared ones included.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	o.Common.AddFlags(fs)
	fs.StringVar(&o.MetricsBindAddress, "metrics-bind-address", ":9452", "address of the Prometheus metrics endpoint (0 disables it)")
	fs.StringVar(&o.ProbeAddress, "health-probe-bind-address", ":9456", "address of the /healthz and /readyz endpoints (0 disables them)")
	fs.DurationVar(&o.LeaseDuration, "lease-duration", time.Second, "gateway Lease duration (whole seconds: the Lease counts seconds)")
	fs.DurationVar(&o.RenewDeadline, "lease-renew-deadline", 800*time.Millisecond, "how long the active gateway retries renewing before it steps down")
	fs.DurationVar(&o.RetryPeriod, "lease-retry-period", 200*time.Millisecond, "how often the Lease is renewed or tried")
	fs.DurationVar(&o.RestartGrace, "lease-restart-grace", 15*time.Second, "how long a restarting active gateway keeps the Lease for its next process (0 releases it on every stop)")
	fs.DurationVar(&o.ProbeInterval, "probe-interval", time.Second, "health probe interval per remote gateway")
	fs.DurationVar(&o.StatusInterval, "status-interval", mcnetv1.GatewayHeartbeat, "how often the Gateway status is renewed (its heartbeat, with fresh RTT figures); at most "+mcnetv1.GatewayHeartbeat.String())
}

// validateLease checks the Lease timings: other candidates see the duration in whole
// seconds, and the holder must give up before they take over.
func (o *Options) validateLease() error {
	switch {
	case o.LeaseDuration < time.Second || o.LeaseDuration%time.Second != 0:
		return fmt.Errorf("--lease-duration=%s: must be a whole number of seconds (the Lease records seconds), e.g. 1s", o.LeaseDuration)
	case o.RenewDeadline <= 0 || o.RenewDeadline >= o.LeaseDuration:
		return fmt.Errorf("--lease-renew-deadline=%s: must be shorter than --lease-duration=%s, or the active gateway keeps acting after a standby took over", o.RenewDeadline, o.LeaseDuration)
	case o.RetryPeriod <= 0 || o.RetryPeriod >= o.RenewDeadline:
		return fmt.Errorf("--lease-retry-period=%s: must be shorter than --lease-renew-deadline=%s", o.RetryPeriod, o.RenewDeadline)
	case o.StatusInterval <= 0 || o.StatusInterval > mcnetv1.GatewayHeartbeat:
		return fmt.Errorf("--status-interval=%s: must be positive and at most %s, or readers count this gateway dead between renewals", o.StatusInterval, mcnetv1.GatewayHeartbeat)
	}
	return nil
}

// electionConfig is the Lease election's part of the options.
func (o *Options) electionConfig() election.Config {
	return election.Config{
		Namespace: o.Namespace, Identity: o.NodeName,
		LeaseDuration: o.LeaseDuration, RenewDeadline: o.RenewDeadline, RetryPeriod: o.RetryPeriod,
		RestartGrace: o.RestartGrace, LivenessPort: o.livenessPort(),
	}
}

// healthCheckPort is the UDP port gateways of the fleet answer probes on.
func (o *Options) healthCheckPort() int { return int(o.Config.Gateway.HealthCheckPort) }

// livenessPort is the UDP port on the node's address where the active gateway answers
// its standbys (0 disables: Lease timing alone decides failovers).
func (o *Options) livenessPort() int {
	if p := o.Config.Gateway.LivenessPort; p != nil {
		return int(*p)
	}
	return 0
}
