package gateway

import (
	"net/netip"
	"testing"
	"time"
)

// probeSim drives a prober on a simulated clock: ticks every check interval, a remote
// that answers every probe after rtt while alive says it, no sockets.
type probeSim struct {
	p     *prober
	now   time.Time
	to    netip.AddrPort
	rtt   time.Duration
	sent  int
	alive func(time.Time) bool
}

func newProbeSim(interval time.Duration, alive func(time.Time) bool) *probeSim {
	s := &probeSim{p: newProber(interval), now: time.Unix(1000, 0), to: netip.MustParseAddrPort("10.20.0.1:4801"), rtt: 3 * time.Millisecond, alive: alive}
	s.p.setTargets(map[string]netip.AddrPort{"west": s.to})
	return s
}

// step runs one tick and answers the probes it sent; it returns the stats after it.
func (s *probeSim) step() ProbeStats {
	before := map[uint64]bool{}
	for seq := range s.p.pending {
		before[seq] = true
	}
	s.p.tick(s.now)
	for seq, pp := range s.p.pending {
		if before[seq] {
			continue
		}
		s.sent++
		if s.alive(pp.sent) {
			s.p.reply(seq, s.to, pp.sent.Add(s.rtt))
		}
	}
	st := s.p.stats(s.now)["west"]
	s.now = s.now.Add(s.p.checkInterval())
	return st
}

func TestProberDetectsADeadGatewayWithinDeadTime(t *testing.T) {
	// The remote dies at various points between two probes; it must be reported down
	// DeadAfter after the last probe it answered: two to three intervals after it died.
	for _, offset := range []time.Duration{0, 10 * time.Millisecond, 240 * time.Millisecond, 500 * time.Millisecond, 990 * time.Millisecond} {
		start := time.Unix(1000, 0)
		kill := start.Add(10*time.Second + offset)
		s := newProbeSim(time.Second, func(at time.Time) bool { return at.Before(kill) })
		var downAt time.Time
		for s.now.Before(kill.Add(10 * time.Second)) {
			at := s.now
			st := s.step()
			if st.Down() {
				downAt = at
				if st.Silence < 3*time.Second || st.ConsecutiveLost < LostProbesForError {
					t.Errorf("kill +%s: down with silence %s and %d lost", offset, st.Silence, st.ConsecutiveLost)
				}
				break
			}
			if at.Before(kill) && st.ConsecutiveLost > 0 {
				t.Fatalf("kill +%s: lost probes while the remote answered: %+v", offset, st)
			}
		}
		if downAt.IsZero() {
			t.Fatalf("kill +%s: never reported down", offset)
		}
		took := downAt.Sub(kill)
		t.Logf("kill +%s: down after %s", offset, took)
		if took < 2*time.Second || took > 3*time.Second {
			t.Errorf("kill +%s: down after %s, want between 2 s and 3 s", offset, took)
		}
	}
}

func TestProberToleratesShortSilence(t *testing.T) {
	// A remote gateway restarting: silent for 2.5 s, then answering again. Several
	// probes are lost, but the connection is never judged down.
	start := time.Unix(1000, 0)
	gapFrom, gapTo := start.Add(10*time.Second+300*time.Millisecond), start.Add(12*time.Second+800*time.Millisecond)
	s := newProbeSim(time.Second, func(at time.Time) bool { return at.Before(gapFrom) || !at.Before(gapTo) })
	maxLost := 0
	for s.now.Before(start.Add(20 * time.Second)) {
		st := s.step()
		maxLost = max(maxLost, st.ConsecutiveLost)
		if st.Down() {
			t.Fatalf("judged down at %s with %+v", s.now.Sub(start), st)
		}
	}
	if maxLost < LostProbesForError {
		t.Errorf("at most %d probes lost in a row: the gap did not test the dead time", maxLost)
	}
	if st := s.step(); st.ConsecutiveLost != 0 || st.Sent == st.Lost {
		t.Errorf("not healthy again after the gap: %+v", st)
	}
}

func TestProberPace(t *testing.T) {
	// Healthy: one probe per interval. Silent: four per interval.
	dead := false
	s := newProbeSim(time.Second, func(time.Time) bool { return !dead })
	for range 4 * 10 {
		s.step()
	}
	if s.sent < 10 || s.sent > 11 {
		t.Errorf("healthy: %d probes in 10 intervals, want 10", s.sent)
	}
	dead = true
	for range 4 * 2 { // the first loss is noticed one interval after the last reply
		s.step()
	}
	s.sent = 0
	for range 4 * 10 {
		s.step()
	}
	if s.sent < 39 || s.sent > 40 {
		t.Errorf("silent: %d probes in 10 intervals, want 40", s.sent)
	}
	st := s.step()
	if !st.Down() || st.DeadAfter != 3*time.Second {
		t.Errorf("silent for 12 intervals but not down: %+v", st)
	}
	// Back: down ends at the first reply, and the pace returns to normal.
	dead = false
	if st := s.step(); st.Down() || st.ConsecutiveLost != 0 {
		t.Errorf("answered again but %+v", st)
	}
	s.sent = 0
	for range 4 * 10 {
		s.step()
	}
	if s.sent < 10 || s.sent > 12 {
		t.Errorf("healthy again: %d probes in 10 intervals, want about 10", s.sent)
	}
}

func TestProberForgetsMovedTargets(t *testing.T) {
	s := newProbeSim(time.Second, func(time.Time) bool { return false })
	for range 20 {
		s.step()
	}
	if st := s.step(); !st.Down() {
		t.Fatalf("not down: %+v", st)
	}
	// The remote cluster failed over to another gateway: a fresh start, silent only
	// since probing the new address began.
	s.to = netip.MustParseAddrPort("10.20.0.2:4801")
	s.p.setTargets(map[string]netip.AddrPort{"west": s.to})
	if st := s.step(); st.Down() || st.Sent != 0 || st.Silence != 0 {
		t.Errorf("moved target kept old results: %+v", st)
	}
}
