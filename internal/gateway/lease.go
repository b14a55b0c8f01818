package gateway

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// afterOutageLock is the gateway Lease lock with one change: after the API server was
// unreachable, a candidate observes the Lease afresh. client-go counts a holder's
// term from when the candidate last saw the record change; during an outage nobody
// can renew, so without this every standby would find the Lease expired the moment
// the API server returns and could win the race against the active gateway, a
// failover that no failure called for. With it the holder has a full Lease duration
// after the outage to renew, which it does within a retry period.
type afterOutageLock struct {
	resourcelock.Interface
	unreachable bool // the last Get failed other than with NotFound
	outages     int
}

// Get is the Lease's record; its raw form, which client-go only compares, changes
// with every outage survived.
func (l *afterOutageLock) Get(ctx context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	r, raw, err := l.Interface.Get(ctx)
	if err != nil {
		if !apierrors.IsNotFound(err) {
			l.unreachable = true
		}
		return r, raw, err
	}
	if l.unreachable {
		l.unreachable = false
		l.outages++
	}
	if l.outages > 0 {
		raw = fmt.Appendf(raw, " after outage %d", l.outages)
	}
	return r, raw, nil
}
