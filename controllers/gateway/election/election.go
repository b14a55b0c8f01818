// Package election chooses a cluster's active gateway. The gateways of a cluster
// take part in a Lease election (client-go's leader election on the gateway Lease),
// with three changes that keep a working gateway active:
//
//   - the liveness veto (liveness.go): a standby asks the holder's node, over UDP and
//     under the cluster's HMAC key, whether the holder still serves before it takes
//     over from a holder whose renewals are late;
//   - outage tolerance (lease.go): an API server outage restarts the holder's term
//     rather than expiring it at every standby the moment the API server returns;
//   - the restart grace (handover.go): a restarting holder keeps the Lease for its
//     next process, and a node going away hands it over at once.
//
// The Elector runs beside the gateway's reconciler, on goroutines of its own, and the
// reconciler reads the outcome with Role.
package election

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/mcnet-io/mcnet/internal/agent"
)

// Config is what an Elector needs to know: whose Lease, who this is, its timings.
type Config struct {
	// Namespace holds the gateway Lease (agent.LeaseName) and the liveness key.
	Namespace string
	// Identity is this candidate's name in the Lease: its node's name, so that the
	// next process on the same node is the same candidate.
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod are client-go's election timings: a
	// standby takes over at most LeaseDuration+RetryPeriod after the holder stops
	// renewing; the holder gives up after RenewDeadline.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// RestartGrace is how long HandOver keeps the Lease for a restarting holder.
	RestartGrace time.Duration
	// LivenessPort is the UDP port of the liveness check (0 disables it).
	LivenessPort int
}

// Elector takes part in the gateway Lease election for one gateway process.
type Elector struct {
	cfg  Config
	log  logr.Logger
	kube kubernetes.Interface // the Lease's own client
	live *liveness
	now  func() time.Time
	// changed is told of every change of role or holder.
	changed func()
	// kept is told of every late renewal the liveness veto let pass.
	kept func()

	mu      sync.Mutex
	leading bool
	leader  string
}

// New returns an Elector on kube, which should serve the Lease only, so renewals
// never wait in a rate limiter behind other writes. changed is called whenever the
// role or the holder changes, kept whenever the veto keeps a late holder; either may
// be nil.
func New(log logr.Logger, cfg Config, kube kubernetes.Interface, changed, kept func()) *Elector {
	e := &Elector{cfg: cfg, log: log, kube: kube, live: newLiveness(cfg.LivenessPort), now: time.Now, changed: changed, kept: kept}
	e.live.log = func(msg string, err error) { log.Error(err, msg) }
	return e
}

func (e *Elector) notify() {
	if e.changed != nil {
		e.changed()
	}
}

// RunLiveness loads the cluster's liveness key from secrets (filling it in when the
// Secret has none) and serves the liveness port, both on goroutines of their own,
// until ctx ends.
func (e *Elector) RunLiveness(ctx context.Context, secrets typedcorev1.SecretInterface) {
	go e.live.loadKey(ctx, secrets, e.cfg.RetryPeriod)
	go func() {
		if err := e.live.run(ctx); err != nil {
			e.log.Error(err, "Liveness port unavailable: a standby takes over whenever the Lease renewals are late", "port", e.cfg.LivenessPort)
		}
	}()
}

// Serve says whether this process serves as the active gateway, which is when it
// answers standbys on the liveness port; it reports whether that changed.
func (e *Elector) Serve(on bool) bool { return e.live.serving.Swap(on) != on }

// WatchHolder points the liveness check at the Lease holder's node at addr; an
// empty holder, or this node, stops asking.
func (e *Elector) WatchHolder(holder string, addr netip.Addr) {
	if holder == "" || holder == e.cfg.Identity {
		holder, addr = "", netip.Addr{}
	}
	e.live.watch(holder, addr)
}

// HolderReachable says whether the watched holder answered on its liveness port
// within d; known is false when nothing can be said yet (liveness disabled, no key,
// another holder watched, or asking began less than d ago).
func (e *Elector) HolderReachable(holder string, d time.Duration) (reachable, known bool) {
	return e.live.reachable(holder, d, e.now())
}

// Run takes part in the election until ctx ends, over and over: losing the Lease
// makes this process a candidate again. It never releases the Lease itself: HandOver
// does, or keeps it, once Run has returned.
func (e *Elector) Run(ctx context.Context) {
	// Late renewals can be routine on a loaded API server: say so once a minute.
	tolerLog, silentLog := &everyMinute{}, &everyMinute{}
	c := e.cfg
	lock := &leaseLock{
		Interface: e.live.observing(&resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: c.Namespace, Name: agent.LeaseName},
			Client:     e.kube.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: c.Identity},
		}),
		alive: e.live.alive, now: e.now,
		tolerated: func(holder string, late time.Duration, first bool) {
			if e.kept != nil {
				e.kept()
			}
			if first {
				if n, ok := tolerLog.allow(e.now()); ok {
					e.log.Info("The active gateway renews its Lease late but answers on its liveness port: not taking over", "holder", holder, "late", late.Round(10*time.Millisecond), "timesSinceLastLog", n)
				}
			}
		},
		silent: func(holder string, late time.Duration) {
			if n, ok := silentLog.allow(e.now()); ok {
				e.log.Info("The active gateway renews its Lease late and does not answer on its liveness port: taking over when the Lease runs out", "holder", holder, "late", late.Round(10*time.Millisecond), "lastAnswer", e.live.lastAnswer(), "timesSinceLastLog", n)
			}
		},
		// Ask just before the Lease would run out, so a dead holder is replaced as fast
		// as without the check.
		vetoAfter: max(c.RetryPeriod, c.LeaseDuration-2*c.RetryPeriod),
		maxVeto:   30 * time.Second,
		// The holder renews within two retry periods of the API server's return, so
		// a shorter outage cannot expire its Lease at a standby.
		minOutage:  max(c.RetryPeriod, c.LeaseDuration-2*c.RetryPeriod),
		maxOutages: 3,
	}
	e.yieldAfterCrash(ctx)
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:          lock,
			LeaseDuration: c.LeaseDuration,
			RenewDeadline: c.RenewDeadline,
			RetryPeriod:   c.RetryPeriod,
			// HandOver releases or keeps it, depending on why the process stops.
			ReleaseOnCancel: false,
			Name:            agent.LeaseName,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(context.Context) { e.setLeading(true) },
				OnStoppedLeading: func() { e.setLeading(false) },
				OnNewLeader: func(id string) {
					e.mu.Lock()
					e.leader = id
					e.mu.Unlock()
					e.notify()
				},
			},
		})
		if err != nil {
			e.log.Error(err, "Leader election misconfigured")
			return
		}
		le.Run(ctx)
	}
}

func (e *Elector) setLeading(v bool) {
	e.mu.Lock()
	e.leading = v
	if v {
		e.leader = e.cfg.Identity
	}
	e.mu.Unlock()
	e.notify()
}

// Role says whether this process should act as the active gateway, and who holds the
// Lease ("" while unknown). A holder that sees another node named in the Lease steps
// down at once rather than when its own renewals time out: two active gateways would
// fight over the cluster's Endpoint.
func (e *Elector) Role() (leading bool, leader string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leading && (e.leader == "" || e.leader == e.cfg.Identity), e.leader
}

// everyMinute lets a repeated log line through at most once a minute.
type everyMinute struct {
	last  time.Time
	count int
}

// allow counts an occurrence and says whether to log it, with how many there were
// since the last one logged.
func (e *everyMinute) allow(now time.Time) (int, bool) {
	e.count++
	if !e.last.IsZero() && now.Sub(e.last) < time.Minute {
		return 0, false
	}
	n := e.count
	e.last, e.count = now, 0
	return n, true
}
