//go:build e2e

package e2e

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/e2e/lab"
	"github.com/mcnet-io/mcnet/e2e/lab/labtest"
	"github.com/mcnet-io/mcnet/internal/agent"
)

// restartTrials is how many times BenchmarkGatewayRestart restarts the gateway per
// cable driver.
const restartTrials = 10

// BenchmarkGatewayRestart measures what a restart of the active gateway (SIGTERM of
// its container; the kubelet starts it again) costs the remote clusters, per cable
// driver, on two clusters of two nodes. A pod on the second cluster's worker sends a
// health probe every 20 ms through the cable to the first cluster's active gateway;
// the figure is the longest run of unanswered probes around each restart (p50, p99),
// and the flaps are the samples of the remote's connection seen not connected. The
// kubelet's crash-loop back-off (2 s in the lab) applies from the second restart on.
func BenchmarkGatewayRestart(b *testing.B) {
	labtest.RequireRoot(b)
	for _, d := range mcnetv1.CableDrivers {
		b.Run(string(d), func(b *testing.B) {
			// The figures are printed; the loop's own time means nothing.
			for b.Loop() {
				gaps, flaps := restartGaps(b, d)
				p50, p99 := percentiles(gaps)
				b.ReportMetric(p50.Seconds(), "s/gap-p50")
				b.ReportMetric(p99.Seconds(), "s/gap-p99")
				b.ReportMetric(float64(len(flaps)), "flap-samples")
				b.Logf("%s: %d restarts: probes unanswered p50 %s, p99 %s (%v); %d flap samples at the remote: %v",
					d, len(gaps), p50.Round(time.Millisecond), p99.Round(time.Millisecond), gaps, len(flaps), flaps)
			}
		})
	}
}

// restartGaps runs the trials of BenchmarkGatewayRestart for cable driver d.
func restartGaps(b *testing.B, d mcnetv1.CableDriver) (gaps []time.Duration, flaps []string) {
	ctx := b.Context()
	l := startConnected(b, connectFleet(d, d), 2)
	_, clients := serveOnWorkers(b, l.Lab)
	c1 := l.Clusters()[0]
	holder, err := leaseHolder(ctx, c1)
	if err != nil {
		b.Fatal(err)
	}
	node, err := c1.Client.CoreV1().Nodes().Get(ctx, holder, metav1.GetOptions{})
	if err != nil {
		b.Fatal(err)
	}
	hcs, err := agent.HealthCheckIPs(node)
	if err != nil {
		b.Fatal(err)
	}
	to := net.JoinHostPort(hcs[0].String(), strconv.Itoa(mcnetv1.DefaultHealthCheckPort))
	conn, err := clients[l.Clusters()[1].Name].Dial(ctx, "udp", to)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	r := &replyLog{}
	go r.read(conn)
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		var buf [13]byte
		copy(buf[:], "MCNP")
		buf[4] = 1 // a request, as a remote gateway's prober sends it
		for seq := uint64(1); sctx.Err() == nil; seq++ {
			binary.BigEndian.PutUint64(buf[5:], seq)
			_, _ = conn.Write(buf[:])
			time.Sleep(20 * time.Millisecond)
		}
	}()
	if err := lab.Eventually(ctx, 30*time.Second, func(context.Context) error { return r.since(time.Now().Add(-time.Second)) }); err != nil {
		b.Fatalf("no probe replies from %s: %v", to, err)
	}
	stopFlaps := watchFlaps(b, l)
	for range restartTrials {
		start := time.Now()
		if err := c1.Restart(ctx, "mcnet-gateway", holder); err != nil {
			b.Fatal(err)
		}
		// Restart returns once the old process has exited: a reply after that comes
		// from the next one.
		exited := time.Now()
		if err := lab.Eventually(ctx, time.Minute, func(context.Context) error { return r.since(exited) }); err != nil {
			b.Fatalf("the restarted gateway does not answer: %v", err)
		}
		// Long enough for the remote to judge the connection, and for the next gap
		// to stand apart.
		time.Sleep(4 * time.Second)
		gaps = append(gaps, r.longestGap(start.Add(-time.Second), time.Now()))
	}
	return gaps, stopFlaps()
}

// replyLog records when the replies of a stream of requests arrived: probe replies
// (replyLog.read) or echo replies (echoStream).
type replyLog struct {
	mu sync.Mutex
	at []time.Time
	// seq is each reply's ICMP sequence number, when the replies are pings'.
	seq []int
}

func (r *replyLog) read(conn net.Conn) {
	buf := make([]byte, 64)
	for {
		n, err := conn.Read(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		// Other errors are the ICMP port unreachable of a moment nobody listens.
		if err == nil && n == 13 && buf[4] == 2 {
			r.add(time.Now())
		}
	}
}

// add records a reply that arrived at t; replies are added in the order they arrive.
func (r *replyLog) add(t time.Time) {
	r.mu.Lock()
	r.at = append(r.at, t)
	r.mu.Unlock()
}

// addSeq records the reply to ping sequence number seq, arrived at t.
func (r *replyLog) addSeq(t time.Time, seq int) {
	r.mu.Lock()
	r.at = append(r.at, t)
	r.seq = append(r.seq, seq)
	r.mu.Unlock()
}

// longestLossAt is the longest time in [from, to] in which the pings sent got no
// reply, and when it began: the time between two replies with lost requests between
// them (their sequence numbers are not consecutive), and the time before the first
// reply and after the last. Replies that merely come late, because ping itself was
// not scheduled on this shared machine and sent nothing meanwhile, are no loss of
// the path. Without sequence numbers it is longestGapAt.
func (r *replyLog) longestLossAt(from, to time.Time) (time.Duration, time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gapAt(from, to, len(r.seq) == len(r.at))
}

// gapAt is longestGapAt, or longestLossAt when bySeq; r.mu is held.
func (r *replyLog) gapAt(from, to time.Time, bySeq bool) (time.Duration, time.Time) {
	var gap time.Duration
	began, prev, prevSeq := from, from, -1
	for i, t := range r.at {
		if t.Before(from) || t.After(to) {
			continue
		}
		// ICMP sequence numbers wrap at 2^16.
		lost := !bySeq || prevSeq < 0 || (r.seq[i]-prevSeq+1<<16)%(1<<16) > 1
		if d := t.Sub(prev); lost && d > gap {
			gap, began = d, prev
		}
		if bySeq {
			prevSeq = r.seq[i]
		}
		prev = t
	}
	if d := to.Sub(prev); d > gap {
		gap, began = d, prev
	}
	return gap, began
}

// count is how many replies arrived in [from, to].
func (r *replyLog) count(from, to time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, t := range r.at {
		if !t.Before(from) && !t.After(to) {
			n++
		}
	}
	return n
}

// since says whether a reply arrived after t.
func (r *replyLog) since(t time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.at); n > 0 && r.at[n-1].After(t) {
		return nil
	}
	return fmt.Errorf("no probe reply since %s", t.Format(time.StampMilli))
}

// longestGap is the longest time between replies in [from, to].
func (r *replyLog) longestGap(from, to time.Time) time.Duration {
	gap, _ := r.longestGapAt(from, to)
	return gap
}

// longestGapAt is longestGap and the time the gap began: the reply before it, or
// from.
func (r *replyLog) longestGapAt(from, to time.Time) (time.Duration, time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gapAt(from, to, false)
}
