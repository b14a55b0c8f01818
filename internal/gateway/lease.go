package gateway

import (
	"bytes"
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// leaseLock is the gateway Lease lock with two changes to how a candidate sees the
// holder's term. client-go counts the term from when the candidate last saw the
// record change, and takes over once it has not changed for the Lease duration. Its
// raw form, which client-go only compares, is changed here, so the term starts afresh:
//
//   - after the API server was unreachable: during an outage nobody can renew, so
//     without this every standby would find the Lease expired the moment the API
//     server returns and could win the race against the active gateway, a failover
//     that no failure called for. With it the holder has a full Lease duration after
//     the outage to renew, which it does within a retry period;
//   - while the holder still answers on its liveness port (alive) once its renewals
//     are late (vetoAfter): a busy API server that answers the holder's renewals
//     slowly must not make a standby take over from a gateway that still carries the
//     traffic. A dead holder answers nothing, and is replaced when the Lease runs out
//     as if there were no liveness check.
type leaseLock struct {
	resourcelock.Interface
	// alive says whether the named holder answers on its liveness port; nil never.
	alive func(holder string, now time.Time) bool
	// tolerated, when set, is told of the first late renewal let pass after each real
	// one, and of every one after it (first false).
	tolerated func(holder string, late time.Duration, first bool)
	// silent, when set, is told once per renewal when the holder is late and does not
	// answer: the Lease is left to run out.
	silent func(holder string, late time.Duration)
	// vetoAfter is how long the record must stay unchanged before alive is asked;
	// after maxVeto an alive holder that still has not renewed is replaced anyway (it
	// cannot reach its API server, so it no longer sees the fleet change).
	vetoAfter, maxVeto time.Duration
	now                func() time.Time

	unreachable bool // the last Get failed other than with NotFound
	outages     int
	lastRaw     []byte    // the record as the API server last returned it
	changedAt   time.Time // when it last changed
	vetoes      int
	vetoedAt    time.Time // changedAt of the record last vetoed
	silentAt    time.Time // changedAt of the record whose holder last did not answer
}

// Get is the Lease's record; its raw form changes with every outage survived and
// every late renewal of a holder that is alive.
func (l *leaseLock) Get(ctx context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	r, raw, err := l.Interface.Get(ctx)
	if err != nil {
		if !apierrors.IsNotFound(err) {
			l.unreachable = true
		}
		return r, raw, err
	}
	now := l.now()
	if !bytes.Equal(raw, l.lastRaw) {
		l.lastRaw, l.changedAt = bytes.Clone(raw), now
	}
	if l.unreachable {
		l.unreachable = false
		l.outages++
	}
	holder := r.HolderIdentity
	if l.alive != nil && holder != "" && holder != l.Identity() && l.late(now) {
		if l.alive(holder, now) {
			l.vetoes++
			if l.tolerated != nil {
				l.tolerated(holder, now.Sub(l.changedAt), !l.vetoedAt.Equal(l.changedAt))
			}
			l.vetoedAt = l.changedAt
		} else if l.silent != nil && !l.silentAt.Equal(l.changedAt) {
			l.silentAt = l.changedAt
			l.silent(holder, now.Sub(l.changedAt))
		}
	}
	if l.outages > 0 || l.vetoes > 0 {
		raw = fmt.Appendf(bytes.Clone(raw), " after outage %d, holder alive %d", l.outages, l.vetoes)
	}
	return r, raw, nil
}

// late says whether the holder's renewal is overdue enough to ask whether it lives,
// and not so long overdue that it no longer matters.
func (l *leaseLock) late(now time.Time) bool {
	d := now.Sub(l.changedAt)
	return d >= l.vetoAfter && d < l.maxVeto
}
