package dataplane

import (
	"testing"
	"time"
)

// TestWireGuardGateReconnects: on real userspace WireGuard devices, the session gate
// holds a remote's packets while the remote does not answer, and the remote connects
// promptly once it does. First a partition heals (both gateways configured, WireGuard
// blocked at gwb from the start, then unblocked: the gateways' own retries must find
// each other); then a gateway that was not running comes up with a new key, as a
// replaced gateway does. "Promptly" is a bound far below gateRetryAfter (the gate's
// own retry), so a gate that waited for that would fail.
func TestWireGuardGateReconnects(t *testing.T) {
	requireRoot(t)
	l := newLab(t)
	l.startNodes()
	keyA := l.key("gwa")
	states := l.states(DriverWireGuard, keyA, l.key("gwb"))

	t.Run("PartitionHeals", func(t *testing.T) {
		l.exec("gwb", "nft", "add table inet mcntblock")
		l.exec("gwb", "nft", "add chain inet mcntblock in { type filter hook input priority -300; }")
		l.exec("gwb", "nft", "add rule inet mcntblock in udp dport 51820 drop")
		for _, role := range []string{"gwa", "gwb", "nodea"} {
			if _, err := l.nodes[role].call(helperRequest{Op: "apply", State: states[role]}); err != nil {
				t.Fatal(err)
			}
		}
		l.try("poda", "ping", "-c", "3", "-i", "0.2", "-W", "1", podB.String()) // traffic while cut off
		l.waitHeld("gwa", 1)
		l.waitHeld("gwb", 1)
		l.exec("gwb", "nft", "delete table inet mcntblock")
		l.pingWithin("poda", podB.String(), 15*time.Second)
		l.waitHeld("gwa", 0)
	})

	t.Run("RemoteComesUp", func(t *testing.T) {
		// gwb is replaced: a new process with a new key, not configured yet.
		l.nodes["gwb"].stop()
		l.nodes["gwb"] = l.startNode("gwb")
		states := l.states(DriverWireGuard, keyA, l.key("gwb"))
		if _, err := l.nodes["gwa"].call(helperRequest{Op: "apply", State: states["gwa"]}); err != nil {
			t.Fatal(err)
		}
		l.try("poda", "ping", "-c", "3", "-i", "0.2", "-W", "1", podB.String())
		l.waitHeld("gwa", 1)
		if _, err := l.nodes["gwb"].call(helperRequest{Op: "apply", State: states["gwb"]}); err != nil {
			t.Fatal(err)
		}
		l.pingWithin("poda", podB.String(), 10*time.Second)
		l.waitHeld("gwa", 0)
	})
}

// waitHeld polls until role's session gate holds exactly want peers.
func (l *lab) waitHeld(role string, want int) {
	l.tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rep, err := l.nodes[role].call(helperRequest{Op: "held"})
		if err != nil {
			l.tb.Fatal(err)
		}
		if rep.Held == want {
			return
		}
		if time.Now().After(deadline) {
			l.tb.Fatalf("%s: session gate holds %d peers, want %d", role, rep.Held, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pingWithin polls until one ping from gets through to, failing after within.
func (l *lab) pingWithin(from, to string, within time.Duration) {
	l.tb.Helper()
	start := time.Now()
	for {
		out, err := l.try(from, "ping", "-c", "1", "-W", "1", to)
		if err == nil {
			l.tb.Logf("%s reached %s after %v", from, to, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > within {
			l.tb.Fatalf("%s cannot ping %s within %v: %v\n%s\n%s", from, to, within, err, out, l.debug())
		}
	}
}

// heldPeers counts the peers the session gates of this process's devices hold.
func (w *wgLinks) heldPeers() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, u := range w.devs {
		if u.gate == nil {
			continue
		}
		if t := u.gate.held.Load(); t != nil {
			seen := map[*gatePeer]bool{}
			for _, p := range t.byPrefix {
				if p.held && !seen[p] {
					seen[p] = true
					n++
				}
			}
		}
	}
	return n
}
