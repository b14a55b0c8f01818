package gateway

import (
	"net"
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

func TestProberHoldsAnAnnouncedRestart(t *testing.T) {
	for _, tc := range []struct {
		name string
		// silent is how long the remote is silent after its announcement; hold is
		// what it asks for.
		silent, hold time.Duration
		// wantDown is whether it must be judged down, and not before downAfter.
		wantDown  bool
		downAfter time.Duration
	}{
		{name: "back within the hold", silent: 6 * time.Second, hold: 15 * time.Second},
		{name: "silent past the hold", silent: time.Minute, hold: 5 * time.Second, wantDown: true, downAfter: 5 * time.Second},
		{name: "hold capped", silent: time.Hour, hold: time.Hour, wantDown: true, downAfter: MaxRestartHold},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Unix(1000, 0)
			announce := start.Add(10*time.Second + 100*time.Millisecond)
			s := newProbeSim(time.Second, func(at time.Time) bool { return at.Before(announce) || !at.Before(announce.Add(tc.silent)) })
			announced := false
			var downAt time.Time
			for s.now.Before(announce.Add(tc.silent + 5*time.Second)) {
				if !announced && !s.now.Before(announce) {
					s.p.restarting(s.to, tc.hold, s.now)
					announced = true
				}
				at := s.now
				st := s.step()
				if st.Down() && downAt.IsZero() {
					downAt = at
				}
				if announced && downAt.IsZero() && at.Before(announce.Add(min(tc.silent, tc.hold))) && !st.Restarting() {
					t.Fatalf("at %s: not held: %+v", at.Sub(announce), st)
				}
			}
			switch {
			case !tc.wantDown && !downAt.IsZero():
				t.Fatalf("judged down %s after the announcement", downAt.Sub(announce))
			case tc.wantDown && downAt.IsZero():
				t.Fatalf("never judged down")
			case tc.wantDown && downAt.Sub(announce) < tc.downAfter:
				t.Fatalf("judged down %s after the announcement, before the hold of %s ended", downAt.Sub(announce), tc.downAfter)
			}
			if !tc.wantDown {
				if st := s.step(); st.Restarting() || st.ConsecutiveLost != 0 {
					t.Errorf("answering again but %+v", st)
				}
			}
		})
	}
}

func TestProberIgnoresAnnouncementsOfSilentTargets(t *testing.T) {
	// A target silent for DeadAfter (dead, or never there) cannot hold itself up.
	s := newProbeSim(time.Second, func(time.Time) bool { return false })
	for range 4 * 5 {
		s.step()
	}
	s.p.restarting(s.to, 15*time.Second, s.now)
	if st := s.step(); st.Restarting() || !st.Down() {
		t.Errorf("announcement of a silent target honoured: %+v", st)
	}
	// Nor can an address that is no target.
	s2 := newProbeSim(time.Second, func(time.Time) bool { return true })
	for range 8 {
		s2.step()
	}
	s2.p.restarting(netip.MustParseAddrPort("10.20.0.9:4801"), 15*time.Second, s2.now)
	if st := s2.step(); st.Restarting() {
		t.Errorf("announcement from another address honoured: %+v", st)
	}
}

func TestProberAnnouncesOnTheWire(t *testing.T) {
	// Two probers on loopback: east probes west; west announces its restart (and
	// closes its socket); east holds west through the silence that follows.
	ctx := t.Context()
	east, west := newProber(time.Second), newProber(time.Second)
	eastAt, westAt := netip.MustParseAddrPort("127.0.0.1:0"), netip.MustParseAddrPort("127.0.0.1:0")
	for _, x := range []struct {
		p  *prober
		at *netip.AddrPort
	}{{east, &eastAt}, {west, &westAt}} {
		if err := x.p.listen(ctx, *x.at); err != nil {
			t.Fatal(err)
		}
		*x.at = x.p.conn.LocalAddr().(*net.UDPAddr).AddrPort()
		defer x.p.close()
	}
	east.setTargets(map[string]netip.AddrPort{"west": westAt})
	poll := func(what string, cond func(ProbeStats) bool) {
		t.Helper()
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			east.tick(time.Now())
			if cond(east.stats(time.Now())["west"]) {
				return
			}
		}
		t.Fatalf("%s: %+v", what, east.stats(time.Now())["west"])
	}
	poll("west answers", func(s ProbeStats) bool { return s.Sent > s.Lost })
	west.announceRestart(west.targetAddrs(nil), time.Minute) // no targets: nothing sent
	if west.conn == nil {
		t.Fatal("announcing to nobody closed the socket")
	}
	west.announceRestart([]netip.AddrPort{eastAt}, time.Minute)
	if west.conn != nil {
		t.Fatal("socket still open after the announcement")
	}
	poll("east holds west", func(s ProbeStats) bool {
		return s.Restarting() && time.Until(s.RestartingUntil) > MaxRestartHold-5*time.Second
	})
}

// TestProberHoldsOnItsOwnRestart: a process that starts after a restart of its own
// holds the remotes its previous process saw connected, as if each had announced a
// restart: one that is itself restarting (and so announced to nobody listening) is
// not judged down until the hold runs out, and its first answer ends the hold; one
// that never answers is down once the hold is over.
func TestProberHoldsOnItsOwnRestart(t *testing.T) {
	for _, tc := range []struct {
		name   string
		back   time.Duration // when the remote answers again, from the start; 0: never
		downAt time.Duration // when it must be judged down; 0: never
	}{
		{"remote back within the hold", 8 * time.Second, 0},
		{"remote dead", 0, 15 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Unix(1000, 0)
			p := newProber(time.Second)
			p.holdOnStart(start, 15*time.Second, []string{"west"})
			s := &probeSim{p: p, now: start, to: netip.MustParseAddrPort("10.20.0.1:4801"), rtt: 3 * time.Millisecond,
				alive: func(at time.Time) bool { return tc.back > 0 && !at.Before(start.Add(tc.back)) }}
			p.setTargets(map[string]netip.AddrPort{"west": s.to, "north": netip.MustParseAddrPort("10.40.0.1:4801")})
			var down time.Time
			for s.now.Before(start.Add(25 * time.Second)) {
				at := s.now
				st := s.step()
				if north := p.stats(at)["north"]; north.Restarting() {
					t.Fatal("north was not held by the previous process and must not be held")
				}
				if st.Down() && down.IsZero() {
					down = at
				}
				if st.Restarting() && !st.OwnRestart {
					t.Fatalf("at +%s: held, but not as this process's own restart", at.Sub(start))
				}
				if tc.back > 0 && at.After(start.Add(tc.back+time.Second)) && st.Restarting() {
					t.Fatalf("at +%s: still held after the remote answered at +%s", at.Sub(start), tc.back)
				}
			}
			switch {
			case tc.downAt == 0 && !down.IsZero():
				t.Errorf("judged down at +%s; want held until it answered", down.Sub(start))
			case tc.downAt > 0 && down.IsZero():
				t.Error("never judged down")
			case tc.downAt > 0 && (down.Before(start.Add(tc.downAt)) || down.After(start.Add(tc.downAt+time.Second))):
				t.Errorf("judged down at +%s; want when the hold runs out, +%s", down.Sub(start), tc.downAt)
			}
		})
	}
}
