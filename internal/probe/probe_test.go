package probe

import (
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

func listen(t *testing.T, session string) netip.AddrPort {
	t.Helper()
	srv, err := Listen(t.Context(), "127.0.0.1:0", session)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(srv.Port()))
}

func TestThroughputLoopback(t *testing.T) {
	target := listen(t, "session-0123456789")
	for _, streams := range []int{1, 4} {
		r, err := Throughput(t.Context(), Endpoint{Target: target, Session: "session-0123456789"}, streams, 300*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if r.Streams != streams || r.Bytes == 0 || r.Duration <= 0 {
			t.Errorf("%d streams: got %+v, want bytes received by every stream", streams, r)
		}
		t.Logf("%d streams: %.2f Gbit/s", streams, r.BitsPerSecond()/1e9)
	}
}

func TestThroughputWrongSession(t *testing.T) {
	target := listen(t, "session-0123456789")
	_, err := Throughput(t.Context(), Endpoint{Target: target, Session: "someone-else-xxxx"}, 1, 100*time.Millisecond)
	if err == nil {
		t.Fatal("a server answered a stream of another session")
	}
}

func TestLatencyLoopback(t *testing.T) {
	target := listen(t, "session-0123456789")
	r, err := Latency(t.Context(), Endpoint{Target: target, Session: "session-0123456789"}, 50, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r.Sent != 50 || r.Received != 50 {
		t.Errorf("sent %d received %d, want 50/50", r.Sent, r.Received)
	}
	if !(r.Min > 0 && r.Min <= r.Avg && r.Avg <= r.Max && r.Min <= r.P99 && r.P99 <= r.Max) {
		t.Errorf("RTTs not ordered min<=avg,p99<=max: %+v", r)
	}
}

func TestLatencyNoServer(t *testing.T) {
	target := listen(t, "session-0123456789")
	r, err := Latency(t.Context(), Endpoint{Target: target, Session: "not-this-session"}, 3, time.Millisecond)
	if err == nil || r.Received != 0 || r.LossPercent() != 100 {
		t.Errorf("got %+v, %v; want 100%% loss and an error", r, err)
	}
}

func TestPathMTULoopback(t *testing.T) {
	target := listen(t, "session-0123456789")
	r, err := PathMTU(t.Context(), Endpoint{Target: target, Session: "session-0123456789"})
	if err != nil {
		t.Fatal(err)
	}
	// Loopback carries what its MTU says, up to the largest UDP datagram.
	if want := min(r.InterfaceMTU, 65535); r.PathMTU != want || r.Interface != "lo" {
		t.Errorf("got %+v, want path MTU %d on lo", r, want)
	}
}

func TestSummarise(t *testing.T) {
	var rtts []time.Duration
	for i := 100; i >= 1; i-- {
		rtts = append(rtts, time.Duration(i)*time.Millisecond)
	}
	var r LatencyResult
	summarise(&r, rtts)
	want := LatencyResult{Min: time.Millisecond, Avg: 50500 * time.Microsecond, P99: 99 * time.Millisecond, Max: 100 * time.Millisecond}
	if r != want {
		t.Errorf("got %+v, want %+v", r, want)
	}
}

// TestEchoAnswersFromTheAddressAsked runs the server on every address, as the agents do,
// and asks it at 127.0.0.2 from 127.0.0.1: the kernel's own choice of source for the
// answer would be 127.0.0.1, which the client's connected socket (and, between
// clusters, the tunnel) drops. The echo must leave from the address the request went to.
func TestEchoAnswersFromTheAddressAsked(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs all of 127.0.0.0/8 on the loopback interface (Linux)")
	}
	srv, err := Listen(t.Context(), ":0", "session-0123456789")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	e := Endpoint{
		Target:  netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), uint16(srv.Port())),
		Session: "session-0123456789",
		Source:  netip.MustParseAddr("127.0.0.1"),
	}
	r, err := Latency(t.Context(), e, 5, time.Millisecond)
	if err != nil {
		t.Fatalf("latency to %s from %s: %v", e.Target, e.Source, err)
	}
	if r.Received != 5 {
		t.Errorf("received %d of 5 echoes", r.Received)
	}
	if _, err := PathMTU(t.Context(), e); err != nil {
		t.Errorf("path MTU to %s from %s: %v", e.Target, e.Source, err)
	}
}

// TestConnectFailed tells a target that refuses TCP from one that accepts it but does
// not speak the probe protocol (diagnose checks the broker's API port that way).
func TestConnectFailed(t *testing.T) {
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := other.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().(*net.TCPAddr).AddrPort()
	closed.Close()
	t.Cleanup(func() { other.Close() })
	for _, tc := range []struct {
		name   string
		target netip.AddrPort
		want   bool
	}{
		{"refused", closedAddr, true},
		{"another protocol", other.Addr().(*net.TCPAddr).AddrPort(), false},
	} {
		_, err := Throughput(t.Context(), Endpoint{Target: tc.target, Session: "s"}, 1, 100*time.Millisecond)
		if err == nil {
			t.Fatalf("%s: no error", tc.name)
		}
		if got := ConnectFailed(err.Error()); got != tc.want {
			t.Errorf("%s: ConnectFailed(%q) = %v, want %v", tc.name, err, got, tc.want)
		}
	}
}
