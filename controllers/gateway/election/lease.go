package election

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
//     the outage to renew, which it does within a retry period. Only reads failing for
//     minOutage or longer count as an outage (a shorter gap cannot hide a renewal long
//     enough to expire the Lease), and one unchanged record gets at most maxOutages
//     fresh terms: a standby whose reads are throttled or fail now and then still
//     replaces a dead holder, a few Lease durations late at worst, never not at all;
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
	// minOutage is how long reads must fail to count as an outage; maxOutages caps
	// the fresh terms an unchanged record gets from outages.
	minOutage  time.Duration
	maxOutages int
	now        func() time.Time

	failedAt    time.Time // when the reads began to fail (other than NotFound); zero while they work
	outages     int
	termOutages int       // outages counted since the record last changed
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
	now := l.now()
	if err != nil {
		if !apierrors.IsNotFound(err) && l.failedAt.IsZero() {
			l.failedAt = now
		}
		return r, raw, err
	}
	if !bytes.Equal(raw, l.lastRaw) {
		l.lastRaw, l.changedAt, l.termOutages = bytes.Clone(raw), now, 0
	}
	if !l.failedAt.IsZero() {
		if now.Sub(l.failedAt) >= l.minOutage && l.termOutages < l.maxOutages {
			l.outages++
			l.termOutages++
		}
		l.failedAt = time.Time{}
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
