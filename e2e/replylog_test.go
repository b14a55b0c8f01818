//go:build e2e

package e2e

import (
	"testing"
	"time"
)

// TestLongestLoss: a late run of consecutive replies is ping's own scheduling, not
// the path's; a run with lost requests is the path's, wrapping sequence numbers
// included.
func TestLongestLoss(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	var r replyLog
	for i, ms := range []int{0, 10, 20, 1520, 1530, 1540, 1850, 1860} {
		// 1520 follows 20 with the next sequence number: ping slept. 1850 follows
		// 1540 after 30 lost requests, across the wrap at 2^16.
		seq := 65530 + i
		if ms >= 1850 {
			seq += 30
		}
		r.addSeq(at(ms), seq%(1<<16))
	}
	gap, began := r.longestLossAt(at(0), at(1870))
	if gap != 310*time.Millisecond || !began.Equal(at(1540)) {
		t.Errorf("longestLossAt = %s from %s, want 310ms from %s", gap, began.Format(time.StampMilli), at(1540).Format(time.StampMilli))
	}
	if gap, _ := r.longestGapAt(at(0), at(1870)); gap != 1500*time.Millisecond {
		t.Errorf("longestGapAt = %s, want 1.5s (it counts every silence)", gap)
	}
	// The silence after the last reply counts: nothing says ping stopped asking.
	if gap, began := r.longestLossAt(at(0), at(3000)); gap != 1140*time.Millisecond || !began.Equal(at(1860)) {
		t.Errorf("longestLossAt to 3s = %s from %s, want 1.14s from the last reply", gap, began.Format(time.StampMilli))
	}
}
