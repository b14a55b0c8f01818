package election

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

// DefaultLivenessPort is the UDP port, on every gateway node's own address, where the
// process serving as the cluster's active gateway answers its standbys, unless the
// AgentConfig names another (gateway.livenessPort).
const DefaultLivenessPort = mcnetv1.DefaultLivenessPort

// LivenessKeySecret is the Secret, in the gateway's namespace, that holds the cluster's
// liveness key under LivenessKeyField. The render declares it without data (no key
// material is ever in Git); the first gateway that finds it empty fills in a random
// key. Only the gateway ServiceAccount may read or write it, by name: nobody holds
// create on Secrets, so nobody can plant a service-account token Secret under that
// name, and the type of an existing Secret cannot change.
const (
	LivenessKeySecret = "mcnet-liveness-key"
	LivenessKeyField  = "key"
)

// Liveness wire format, all after 4 bytes magic and 1 byte kind:
//
//	challenge: a 16-byte nonce, fresh for every request;
//	answer:    the nonce, then HMAC-SHA256(key, livenessLabel | nonce | term | holder).
//
// The key is the cluster's own (LivenessKeySecret), term is the Lease's
// leaseTransitions and holder its holderIdentity, as each side last saw them. An
// answer therefore proves that a process with the cluster's key answered this very
// challenge as this holder in this term: a forger without the key cannot make one,
// a recorded answer does not fit a later nonce (and each nonce is accepted once),
// and an answer for another holder or an earlier term is refused.
var livenessMagic = [4]byte{'M', 'C', 'N', 'L'}

const (
	kindChallenge = 3
	kindAnswer    = 4
	nonceLen      = 16
	challengeLen  = 5 + nonceLen
	answerLen     = challengeLen + sha256.Size
	livenessLabel = "mcnet liveness v1\x00"
)

// LivenessKeyLen is the length of the key a gateway fills in, and the least it accepts.
const LivenessKeyLen = 32

// liveness lets standbys tell an active gateway that is slow to renew its Lease (its
// API server is busy or away) from one that is gone. Every gateway process listens on
// the liveness port of its node and answers while it serves as the active gateway;
// a standby challenges the Lease holder's node every livenessInterval. The Lease lock
// consults it (see leaseLock): a holder that still answers keeps the Lease even
// when its renewals are late, while a dead one (crash, power-off) answers nothing and
// is replaced as fast as before, since the answer is asked for only when the Lease is
// about to run out. Without the key nothing is answered and no answer is believed:
// the Lease timing alone decides, as without liveness.
type liveness struct {
	port     int
	peerPort int // where holders answer: port, except in tests
	// serving says this process runs the cluster's active gateway datapath.
	serving atomic.Bool
	// log, when set, reports failures to answer.
	log func(msg string, err error)

	mu        sync.Mutex
	key       []byte                       // the cluster's liveness key; nil until loaded
	self      string                       // this process's Lease identity
	holder    string                       // the Lease holder as last seen
	term      int                          // the Lease's leaseTransitions as last seen
	node      string                       // the watched holder
	addr      netip.AddrPort               // its liveness address
	pending   map[[nonceLen]byte]time.Time // challenges sent and not yet answered
	lastReply time.Time                    // when it last answered
	since     time.Time                    // when asking it began
	refused   int                          // answers refused (bad MAC, unknown nonce, wrong sender)
}

const livenessInterval = 100 * time.Millisecond

// livenessWindow is how recent a holder's answer must be to count as alive: a few
// intervals, so one lost datagram does not matter. A challenge is answerable for as
// long.
const livenessWindow = 350 * time.Millisecond

func newLiveness(port int) *liveness {
	return &liveness{port: port, peerPort: port, pending: map[[nonceLen]byte]time.Time{}}
}

// setKey installs the cluster's liveness key.
func (l *liveness) setKey(key []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.key = append([]byte(nil), key...)
}

// observe records the Lease holder and term as the Lease lock last read or wrote
// them. A new holder or term voids earlier answers.
func (l *liveness) observe(self string, r *resourcelock.LeaderElectionRecord) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.self = self
	if r.HolderIdentity != l.holder || r.LeaderTransitions != l.term {
		l.holder, l.term, l.lastReply = r.HolderIdentity, r.LeaderTransitions, time.Time{}
	}
}

// answerMAC is the answer to nonce from holder in term under key.
func answerMAC(key []byte, nonce []byte, holder string, term int) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(livenessLabel))
	m.Write(nonce)
	m.Write(binary.BigEndian.AppendUint64(nil, uint64(term)))
	m.Write([]byte(holder))
	return m.Sum(nil)
}

// run answers and asks until ctx ends. Without a socket (port taken, 0 disables) it
// returns the error and the gateway works as without liveness: Lease timing alone.
func (l *liveness) run(ctx context.Context) error {
	if l.port == 0 {
		return nil
	}
	pc, err := (&net.ListenConfig{}).ListenPacket(ctx, "udp", net.JoinHostPort("", strconv.Itoa(l.port)))
	if err != nil {
		return err
	}
	conn := pc.(*net.UDPConn)
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	go l.ask(ctx, conn)
	buf := make([]byte, answerLen+1)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			continue
		}
		if n < 5 || [4]byte(buf[:4]) != livenessMagic {
			continue
		}
		switch {
		case buf[4] == kindChallenge && n == challengeLen:
			if reply := l.answer(buf[5:challengeLen]); reply != nil {
				if _, err := conn.WriteToUDPAddrPort(reply, from); err != nil && l.log != nil {
					l.log("liveness reply to "+from.String()+" failed", err)
				}
			}
		case buf[4] == kindAnswer && n == answerLen:
			l.accept(from, buf[5:challengeLen], buf[challengeLen:answerLen], time.Now())
		}
	}
}

// answer is the reply to a challenge, nil unless this process serves as the active
// gateway, holds the Lease as far as it knows, and has the key.
func (l *liveness) answer(nonce []byte) []byte {
	if !l.serving.Load() {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.key == nil || l.self == "" || l.holder != l.self {
		return nil
	}
	reply := append(append(livenessMagic[:0:0], livenessMagic[:]...), kindAnswer)
	reply = append(reply, nonce...)
	return append(reply, answerMAC(l.key, nonce, l.self, l.term)...)
}

// accept counts an answer from the watched holder when it answers a pending
// challenge, from the holder's address, with the MAC the key gives for the holder
// and term this process sees in the Lease. Each challenge is accepted once.
func (l *liveness) accept(from netip.AddrPort, nonce, mac []byte, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := [nonceLen]byte(nonce)
	sent, ok := l.pending[n]
	if !ok || now.Sub(sent) >= livenessWindow || l.key == nil || !l.addr.IsValid() ||
		from.Addr().Unmap() != l.addr.Addr() || l.node != l.holder ||
		!hmac.Equal(mac, answerMAC(l.key, nonce, l.node, l.term)) {
		l.refused++
		return false
	}
	delete(l.pending, n)
	l.lastReply = now
	return true
}

// ask sends a fresh challenge to the watched holder every interval.
func (l *liveness) ask(ctx context.Context, conn *net.UDPConn) {
	t := time.NewTicker(livenessInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if addr, req := l.challenge(time.Now()); req != nil {
			_, _ = conn.WriteToUDPAddrPort(req, addr)
		}
	}
}

// challenge makes the next challenge to the watched holder, nil when there is no
// holder to ask or no key to check the answer with.
func (l *liveness) challenge(now time.Time) (netip.AddrPort, []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for n, sent := range l.pending {
		if now.Sub(sent) >= livenessWindow {
			delete(l.pending, n)
		}
	}
	if !l.addr.IsValid() || l.key == nil {
		return netip.AddrPort{}, nil
	}
	var n [nonceLen]byte
	_, _ = rand.Read(n[:]) // never fails (crypto/rand)
	l.pending[n] = now
	req := append(append(livenessMagic[:0:0], livenessMagic[:]...), kindChallenge)
	return l.addr, append(req, n[:]...)
}

// watch makes node at addr the holder to ask; an empty node stops asking.
func (l *liveness) watch(node string, addr netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ap := netip.AddrPort{}
	if node != "" && addr.IsValid() {
		ap = netip.AddrPortFrom(addr, uint16(l.peerPort))
	}
	if node != l.node || ap != l.addr {
		l.node, l.addr, l.lastReply, l.since = node, ap, time.Time{}, time.Now()
		clear(l.pending)
	}
}

// alive says whether node answered within livenessWindow.
func (l *liveness) alive(node string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return node != "" && node == l.node && !l.lastReply.IsZero() && now.Sub(l.lastReply) < livenessWindow
}

// reachable says whether the watched holder node answered within d; known is false
// while asking it has gone on for less than d (or there is nothing to ask, or no key
// to ask with), when nothing can be said yet.
func (l *liveness) reachable(node string, d time.Duration, now time.Time) (reachable, known bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.port == 0 || l.key == nil || node == "" || node != l.node || !l.addr.IsValid() {
		return false, false
	}
	if !l.lastReply.IsZero() && now.Sub(l.lastReply) < d {
		return true, true
	}
	return false, now.Sub(l.since) >= d
}

// lastAnswer is when the watched holder last answered, for logs.
func (l *liveness) lastAnswer() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastReply
}

// observing wraps the Lease lock so that every record it reads or writes tells
// liveness the holder and term that answers are bound to.
func (l *liveness) observing(lock resourcelock.Interface) resourcelock.Interface {
	return &termLock{Interface: lock, live: l}
}

type termLock struct {
	resourcelock.Interface
	live *liveness
}

func (t *termLock) Get(ctx context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	r, raw, err := t.Interface.Get(ctx)
	if err == nil {
		t.live.observe(t.Identity(), r)
	}
	return r, raw, err
}

func (t *termLock) Create(ctx context.Context, r resourcelock.LeaderElectionRecord) error {
	err := t.Interface.Create(ctx, r)
	if err == nil {
		t.live.observe(t.Identity(), &r)
	}
	return err
}

func (t *termLock) Update(ctx context.Context, r resourcelock.LeaderElectionRecord) error {
	err := t.Interface.Update(ctx, r)
	if err == nil {
		t.live.observe(t.Identity(), &r)
	}
	return err
}

// loadKey reads the cluster's liveness key from its Secret, filling in a random one
// when the Secret has none yet, and retries every retry until it has one or ctx
// ends. Concurrent fills by two gateways are settled by the resourceVersion: the
// loser reads the winner's key.
func (l *liveness) loadKey(ctx context.Context, secrets typedcorev1.SecretInterface, retry time.Duration) {
	var lastErr string
	for {
		key, err := livenessKey(ctx, secrets)
		if err == nil {
			l.setKey(key)
			return
		}
		if msg := err.Error(); msg != lastErr && l.log != nil {
			lastErr = msg
			l.log("no liveness key yet: standbys take over whenever the Lease renewals are late", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
	}
}

// livenessKey reads the key, filling it in once when the Secret has none.
func livenessKey(ctx context.Context, secrets typedcorev1.SecretInterface) ([]byte, error) {
	s, err := secrets.Get(ctx, LivenessKeySecret, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("read Secret %s: %w", LivenessKeySecret, err)
	}
	if k := s.Data[LivenessKeyField]; len(k) > 0 {
		if len(k) < LivenessKeyLen {
			return nil, fmt.Errorf("Secret %s: key %q has %d bytes, want at least %d: delete the field and a gateway makes a new one", LivenessKeySecret, LivenessKeyField, len(k), LivenessKeyLen)
		}
		return k, nil
	}
	if s.Type != corev1.SecretTypeOpaque && s.Type != "" {
		return nil, fmt.Errorf("Secret %s has type %s, want %s", LivenessKeySecret, s.Type, corev1.SecretTypeOpaque)
	}
	key := make([]byte, LivenessKeyLen)
	_, _ = rand.Read(key)
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	s.Data[LivenessKeyField] = key
	if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		if apierrors.IsConflict(err) {
			return livenessKey(ctx, secrets)
		}
		return nil, fmt.Errorf("fill in Secret %s: %w", LivenessKeySecret, err)
	}
	return key, nil
}
