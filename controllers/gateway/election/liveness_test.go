package election

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/mcnet-io/mcnet/internal/agent"
)

var testLivenessKey = bytes.Repeat([]byte{7}, LivenessKeyLen)

// TestLivenessAnswerIsBound checks that a standby believes an answer only when it
// answers a challenge it sent, once, in time, from the holder's address, with the
// MAC of the cluster's key over that nonce, the holder and the Lease term it sees.
func TestLivenessAnswerIsBound(t *testing.T) {
	holder := netip.MustParseAddrPort("127.0.0.1:4802")
	other := bytes.Repeat([]byte{9}, LivenessKeyLen)
	for _, tc := range []struct {
		name string
		// answer makes the answer to nonce, and says where from and when.
		answer func(nonce []byte, now time.Time) (netip.AddrPort, []byte, []byte, time.Time)
		want   bool
	}{
		{"the holder's answer", func(n []byte, now time.Time) (netip.AddrPort, []byte, []byte, time.Time) {
			return holder, n, answerMAC(testLivenessKey, n, "gw1", 3), now
		}, true},
		{"another key", func(n []byte, now time.Time) (netip.AddrPort, []byte, []byte, time.Time) {
			return holder, n, answerMAC(other, n, "gw1", 3), now
		}, false},
		{"no key at all (zero MAC)", func(n []byte, now time.Time) (netip.AddrPort, []byte, []byte, time.Time) {
			return holder, n, make([]byte, 32), now
		}, false},
		{"another holder", func(n []byte, now time.Time) (netip.AddrPort, []byte, []byte, time.Time) {
			return holder, n, answerMAC(testLivenessKey, n, "gw3", 3), now
		}, false},
		{"an earlier term", func(n []byte, now time.Time) (netip.AddrPort, []byte, []byte, time.Time) {
			return holder, n, answerMAC(testLivenessKey, n, "gw1", 2), now
		}, false},
		{"a nonce never sent", func(n []byte, now time.Time) (netip.AddrPort, []byte, []byte, time.Time) {
			m := bytes.Clone(n)
			m[0] ^= 1
			return holder, m, answerMAC(testLivenessKey, m, "gw1", 3), now
		}, false},
		{"from another address", func(n []byte, now time.Time) (netip.AddrPort, []byte, []byte, time.Time) {
			return netip.MustParseAddrPort("127.0.0.9:4802"), n, answerMAC(testLivenessKey, n, "gw1", 3), now
		}, false},
		{"too late", func(n []byte, now time.Time) (netip.AddrPort, []byte, []byte, time.Time) {
			return holder, n, answerMAC(testLivenessKey, n, "gw1", 3), now.Add(livenessWindow)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLiveness(4802)
			l.setKey(testLivenessKey)
			l.observe("gw2", &resourcelock.LeaderElectionRecord{HolderIdentity: "gw1", LeaderTransitions: 3})
			l.watch("gw1", holder.Addr())
			now := time.Now()
			to, req := l.challenge(now)
			if to != holder || len(req) != challengeLen {
				t.Fatalf("challenge to %v: %x", to, req)
			}
			from, nonce, mac, at := tc.answer(req[5:], now)
			if got := l.accept(from, nonce, mac, at); got != tc.want {
				t.Fatalf("accepted = %v, want %v", got, tc.want)
			}
			if got := l.alive("gw1", at); got != tc.want {
				t.Errorf("alive = %v, want %v", got, tc.want)
			}
			if tc.want && l.accept(from, nonce, mac, at) {
				t.Error("the same answer was accepted twice")
			}
		})
	}

	// The holder answers only as itself, in the term it holds, with the key.
	l := newLiveness(4802)
	n := bytes.Repeat([]byte{1}, nonceLen)
	l.serving.Store(true)
	if l.answer(n) != nil {
		t.Error("answered without a key")
	}
	l.setKey(testLivenessKey)
	l.observe("gw1", &resourcelock.LeaderElectionRecord{HolderIdentity: "gw2", LeaderTransitions: 4})
	if l.answer(n) != nil {
		t.Error("answered while another node holds the Lease")
	}
	l.observe("gw1", &resourcelock.LeaderElectionRecord{HolderIdentity: "gw1", LeaderTransitions: 5})
	got := l.answer(n)
	want := append(append(append(livenessMagic[:0:0], livenessMagic[:]...), kindAnswer), n...)
	want = append(want, answerMAC(testLivenessKey, n, "gw1", 5)...)
	if !bytes.Equal(got, want) {
		t.Errorf("answer %x, want %x", got, want)
	}
}

// TestLivenessKeySecret checks that the first gateway fills in the declared Secret,
// the next one reads the same key, and a Secret of another type is refused.
func TestLivenessKeySecret(t *testing.T) {
	ctx := t.Context()
	kube := fake.NewClientset(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "mcnet-system", Name: LivenessKeySecret}, Type: corev1.SecretTypeOpaque})
	secrets := kube.CoreV1().Secrets("mcnet-system")
	a, err := livenessKey(ctx, secrets)
	if err != nil || len(a) != LivenessKeyLen {
		t.Fatalf("first key: %x, %v", a, err)
	}
	b, err := livenessKey(ctx, secrets)
	if err != nil || !bytes.Equal(a, b) {
		t.Fatalf("second gateway read %x, %v; want %x", b, err, a)
	}
	kube = fake.NewClientset(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "mcnet-system", Name: LivenessKeySecret}, Type: corev1.SecretTypeServiceAccountToken})
	if _, err := livenessKey(ctx, kube.CoreV1().Secrets("mcnet-system")); err == nil {
		t.Error("a service-account token Secret was taken for the liveness key")
	}
	if _, err := livenessKey(ctx, fake.NewClientset().CoreV1().Secrets("mcnet-system")); err == nil {
		t.Error("a key without its Secret")
	}
}

// elector runs a gateway's Lease election as the gateway does (the same leaseLock,
// veto timing and liveness wiring) on kube, until ctx ends.
func elector(ctx context.Context, t *testing.T, kube kubernetes.Interface, id string, live *liveness, leading func()) {
	t.Helper()
	const ld, rd, rp = time.Second, 800 * time.Millisecond, 200 * time.Millisecond
	lock := &leaseLock{
		Interface: live.observing(&resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: "mcnet-system", Name: agent.LeaseName},
			Client:     kube.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: id},
		}),
		alive: live.alive, now: time.Now,
		vetoAfter: max(rp, ld-2*rp), maxVeto: 30 * time.Second,
	}
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lock, LeaseDuration: ld, RenewDeadline: rd, RetryPeriod: rp, Name: agent.LeaseName,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(context.Context) { leading() },
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	go le.Run(ctx)
}

// relay sits at the holder's liveness address for the standby. While the holder is
// up it passes challenges and answers through and records the answers; once told to
// forge it plays an attacker without the key: to every challenge it sends back every
// answer it recorded, the challenge's nonce with a recorded MAC, and the nonce with a
// MAC under a key of its own.
type relay struct {
	conn   *net.UDPConn
	holder netip.AddrPort

	mu       sync.Mutex
	forge    bool
	recorded [][]byte
	standby  netip.AddrPort
}

func (r *relay) run() {
	buf := make([]byte, 128)
	guess := bytes.Repeat([]byte{0x42}, LivenessKeyLen)
	for {
		n, from, err := r.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		msg := bytes.Clone(buf[:n])
		r.mu.Lock()
		switch {
		case from == r.holder:
			r.recorded = append(r.recorded, msg)
			if !r.forge {
				_, _ = r.conn.WriteToUDPAddrPort(msg, r.standby)
			}
		case !r.forge:
			r.standby = from
			_, _ = r.conn.WriteToUDPAddrPort(msg, r.holder)
		case n == challengeLen:
			nonce := msg[5:]
			for _, a := range r.recorded {
				_, _ = r.conn.WriteToUDPAddrPort(a, from)
				copied := append(append(bytes.Clone(msg[:5]), nonce...), a[challengeLen:]...)
				copied[4] = kindAnswer
				_, _ = r.conn.WriteToUDPAddrPort(copied, from)
			}
			forged := append(append(bytes.Clone(msg[:5]), nonce...), answerMAC(guess, nonce, "gw1", 0)...)
			forged[4] = kindAnswer
			_, _ = r.conn.WriteToUDPAddrPort(forged, from)
		}
		r.mu.Unlock()
	}
}

// TestForgedLivenessDoesNotHoldOffFailover runs two gateways' Lease elections with
// real liveness sockets on the loopback. The holder stops renewing: while it still
// answers, the standby leaves it the Lease; once it is gone and a forger without the
// key answers at its address — replaying the holder's recorded answers, copying their
// MACs onto fresh nonces, guessing a key — the standby takes over within a few Lease
// durations, as if nobody answered.
func TestForgedLivenessDoesNotHoldOffFailover(t *testing.T) {
	ctx := t.Context()
	kube := fake.NewClientset()
	active, standby := newLiveness(freeUDPPort(t)), newLiveness(freeUDPPort(t))
	active.setKey(testLivenessKey)
	standby.setKey(testLivenessKey)

	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	r := &relay{conn: pc.(*net.UDPConn), holder: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(active.port))}
	go r.run()
	standby.peerPort = pc.LocalAddr().(*net.UDPAddr).Port

	activeCtx, stopActive := context.WithCancel(ctx)
	defer stopActive()
	go func() {
		if err := active.run(activeCtx); err != nil {
			t.Error(err)
		}
	}()
	go func() {
		if err := standby.run(ctx); err != nil {
			t.Error(err)
		}
	}()
	electCtx, stopRenewing := context.WithCancel(activeCtx)
	defer stopRenewing()
	elector(electCtx, t, kube, "gw1", active, func() { active.serving.Store(true) })
	holder := func() string {
		l, err := kube.CoordinationV1().Leases("mcnet-system").Get(ctx, agent.LeaseName, metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return ""
		}
		return *l.Spec.HolderIdentity
	}
	waitHolder := func(want string, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for holder() != want {
			if time.Now().After(deadline) {
				t.Fatalf("Lease holder %q after %v, want %q", holder(), within, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitHolder("gw1", 5*time.Second)
	standby.watch("gw1", netip.MustParseAddr("127.0.0.1"))
	won := make(chan struct{})
	elector(ctx, t, kube, "gw2", standby, func() { close(won) })

	// The holder's API server is away: no renewals, but it answers. The standby must
	// leave it the Lease for several Lease durations.
	deadline := time.Now().Add(5 * time.Second)
	for !standby.alive("gw1", time.Now()) {
		if time.Now().After(deadline) {
			t.Fatal("the holder's genuine answers never reached the standby")
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopRenewing()
	select {
	case <-won:
		t.Fatal("the standby took over from a holder that answers")
	case <-time.After(4 * time.Second):
	}
	if h := holder(); h != "gw1" {
		t.Fatalf("holder %q while gw1 answers", h)
	}

	// The holder dies; the forger answers in its place.
	r.mu.Lock()
	r.forge = true
	recorded := len(r.recorded)
	r.mu.Unlock()
	if recorded == 0 {
		t.Fatal("nothing recorded to replay")
	}
	stopActive()
	select {
	case <-won:
	case <-time.After(10 * time.Second):
		t.Fatal("a forger without the key held off the failover")
	}
	waitHolder("gw2", 5*time.Second)
	standby.mu.Lock()
	refused := standby.refused
	standby.mu.Unlock()
	if refused == 0 {
		t.Error("the forger's answers never reached the standby")
	}
	t.Logf("forged or replayed answers refused: %d (from %d recorded)", refused, recorded)
}
