package dataplane

import (
	"encoding/binary"
	"fmt"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// forkWatcher counts the processes a given process starts, from the kernel's process
// events connector (https://docs.kernel.org/driver-api/connector.html): no seam in
// the code under test, so it also sees an exec nobody routed through one. It needs
// root in the initial network namespace, where the tests run.
type forkWatcher struct {
	fd int

	mu       sync.Mutex
	children map[uint32][]uint32 // parent tgid -> child pids, in order
	cond     *sync.Cond
}

// Connector constants from linux/connector.h and linux/cn_proc.h.
const (
	cnIdxProc         = 1
	cnValProc         = 1
	procCnMcastListen = 1
	procEventFork     = 1
)

func newForkWatcher(tb testing.TB) *forkWatcher {
	tb.Helper()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_CONNECTOR)
	if err != nil {
		tb.Fatalf("process connector: %v", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: cnIdxProc}); err != nil {
		unix.Close(fd)
		tb.Fatalf("process connector: bind: %v", err)
	}
	// nlmsghdr, cn_msg {idx, val, seq, ack, len, flags}, then the listen op.
	msg := make([]byte, 16+20+4)
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], unix.NLMSG_DONE)
	binary.NativeEndian.PutUint32(msg[16:], cnIdxProc)
	binary.NativeEndian.PutUint32(msg[20:], cnValProc)
	binary.NativeEndian.PutUint16(msg[32:], 4)
	binary.NativeEndian.PutUint32(msg[36:], procCnMcastListen)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		tb.Fatalf("process connector: listen: %v", err)
	}
	w := &forkWatcher{fd: fd, children: map[uint32][]uint32{}}
	w.cond = sync.NewCond(&w.mu)
	go w.read()
	tb.Cleanup(func() { unix.Close(fd) })
	return w
}

func (w *forkWatcher) read() {
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(w.fd, buf, 0)
		if err != nil {
			if err == unix.EINTR || err == unix.ENOBUFS {
				continue
			}
			return // closed
		}
		msgs, err := syscallParse(buf[:n])
		if err != nil {
			continue
		}
		for _, m := range msgs {
			d := m.Data // cn_msg (20 bytes) then proc_event
			if len(d) < 20+16+16 || binary.NativeEndian.Uint32(d[20:]) != procEventFork {
				continue
			}
			ev := d[20+16:]
			parentTgid := binary.NativeEndian.Uint32(ev[4:])
			childPid, childTgid := binary.NativeEndian.Uint32(ev[8:]), binary.NativeEndian.Uint32(ev[12:])
			if childPid != childTgid {
				continue // a thread, not a process
			}
			w.mu.Lock()
			w.children[parentTgid] = append(w.children[parentTgid], childPid)
			w.cond.Broadcast()
			w.mu.Unlock()
		}
	}
}

func syscallParse(b []byte) ([]netlink.Message, error) {
	var out []netlink.Message
	for len(b) >= 16 {
		l := int(binary.NativeEndian.Uint32(b))
		if l < 16 || l > len(b) {
			return out, fmt.Errorf("short netlink message")
		}
		var m netlink.Message
		if err := m.UnmarshalBinary(b[:l]); err != nil {
			return out, err
		}
		out = append(out, m)
		b = b[(l+3)&^3:]
	}
	return out, nil
}

// count runs fn and returns how many processes pid started meanwhile. A process
// this test starts afterwards marks the end: its fork event follows any of pid's.
func (w *forkWatcher) count(tb testing.TB, pid int, fn func()) int {
	tb.Helper()
	w.mu.Lock()
	before := len(w.children[uint32(pid)])
	w.mu.Unlock()
	fn()
	marker := exec.Command("true")
	if err := marker.Start(); err != nil {
		tb.Fatal(err)
	}
	marker.Wait()
	self := uint32(unix.Getpid())
	deadline := time.Now().Add(10 * time.Second)
	w.mu.Lock()
	defer w.mu.Unlock()
	for !containsPid(w.children[self], uint32(marker.Process.Pid)) {
		if time.Now().After(deadline) {
			tb.Fatal("process connector: marker fork never seen")
		}
		// Wake up periodically in case the event was lost (ENOBUFS).
		go func() { time.Sleep(100 * time.Millisecond); w.cond.Broadcast() }()
		w.cond.Wait()
	}
	return len(w.children[uint32(pid)]) - before
}

func containsPid(ps []uint32, p uint32) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// nftGeneration asks the kernel for the nftables ruleset generation of the calling
// thread's network namespace; every committed transaction increments it.
func nftGeneration() (uint32, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN), Flags: netlink.Request},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	})
	if err != nil {
		return 0, fmt.Errorf("get nftables generation: %w", err)
	}
	for _, m := range msgs {
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, err
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
	}
	return 0, fmt.Errorf("get nftables generation: no NFTA_GEN_ID")
}
