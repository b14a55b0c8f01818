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

// TestLostBeforeLast: the request in flight when ping is interrupted is not lost;
// every earlier unanswered one is.
func TestLostBeforeLast(t *testing.T) {
	out := `PING 10.0.0.1 (10.0.0.1) 56(84) bytes of data.
64 bytes from 10.0.0.1: icmp_seq=1 ttl=62 time=0.3 ms
64 bytes from 10.0.0.1: icmp_seq=2 ttl=62 time=0.3 ms
64 bytes from 10.0.0.1: icmp_seq=4 ttl=62 time=0.3 ms

--- 10.0.0.1 ping statistics ---
5 packets transmitted, 3 received, 40% packet loss, time 800ms
`
	if got := lostBeforeLast(5, 3, out); got != 1 {
		t.Errorf("lostBeforeLast = %d, want 1 (seq 3; seq 5 was in flight)", got)
	}
	if got := lostBeforeLast(4, 3, out); got != 1 {
		t.Errorf("lostBeforeLast with 4 sent = %d, want 1 (seq 3)", got)
	}
	if got := lostBeforeLast(3, 2, out); got != 0 {
		t.Errorf("lostBeforeLast with 3 sent = %d, want 0 (seq 3 was the last)", got)
	}
	// No reply lines to read: every request but the last is lost.
	if got := lostBeforeLast(6, 2, "6 packets transmitted, 2 received"); got != 5 {
		t.Errorf("lostBeforeLast with no reply lines = %d, want 5", got)
	}
}
