package dataplane

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestUserspaceWireGuardOffloads: the embedded wireguard-go device runs with every
// offload Linux gives it, read back from the kernel rather than from wireguard-go's
// own flags. The TUN carries the virtio-net header with TCP segmentation and checksum
// offload on (so a read or write moves up to 64 KiB, not one MTU), and the UDP socket
// the device sends and receives on has UDP GRO switched on and accepts UDP_SEGMENT:
// the two conditions under which wireguard-go coalesces received datagrams and sends
// with UDP GSO. Losing any of them (a wireguard-go update, a bind without offloads, a
// kernel without the features) fails here instead of quietly halving the cable.
func TestUserspaceWireGuardOffloads(t *testing.T) {
	requireRoot(t)
	inFreshNetns(t, func() {
		w := newWGLinks(&addFails{err: fmt.Errorf("wrapped: %w", unix.EOPNOTSUPP)})
		name := fmt.Sprintf("wgoff%d", os.Getpid()%100000) // the UAPI socket is host-global
		if err := w.Create(context.Background(), name, 1420); err != nil {
			t.Fatal(err)
		}
		defer w.closeAll()
		w.mu.Lock()
		u := w.devs[name]
		w.mu.Unlock()

		// The TUN: the batch size wireguard-go chose, and the kernel's feature flags.
		if !u.offloads() {
			t.Error("TUN without the virtio-net header (batch size 1): no TSO/GRO on the TUN")
		}
		for _, f := range []struct {
			cmd  uint32
			what string
		}{{unix.ETHTOOL_GTSO, "TCP segmentation offload"}, {unix.ETHTOOL_GTXCSUM, "TX checksum offload"}} {
			on, err := ethtoolFlag(name, f.cmd)
			if err != nil {
				t.Fatalf("%s of %s: %v", f.what, name, err)
			}
			if !on {
				t.Errorf("%s is off on TUN %s", f.what, name)
			}
		}

		// The socket opens when the device is up and has a port.
		const port = 51899
		link, err := netlink.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetUp(link); err != nil {
			t.Fatal(err)
		}
		if err := u.dev.IpcSet("listen_port=" + strconv.Itoa(port) + "\n"); err != nil {
			t.Fatal(err)
		}
		var fds []int
		deadline := time.Now().Add(5 * time.Second)
		for len(fds) == 0 && time.Now().Before(deadline) {
			fds = udpSocketsOn(t, port)
			if len(fds) == 0 {
				time.Sleep(20 * time.Millisecond)
			}
		}
		if len(fds) == 0 {
			t.Fatalf("no UDP socket of this process listens on port %d", port)
		}
		for _, fd := range fds {
			gro, err := unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO)
			if err != nil || gro != 1 {
				t.Errorf("UDP socket fd %d on port %d: UDP_GRO = %d (%v), want 1: received datagrams are not coalesced", fd, port, gro, err)
			}
			if _, err := unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT); err != nil {
				t.Errorf("UDP socket fd %d on port %d: UDP_SEGMENT unsupported (%v): no UDP GSO on send", fd, port, err)
			}
		}
	})
}

// udpSocketsOn returns this process's UDP sockets bound to port (of either family).
func udpSocketsOn(t *testing.T, port int) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || !strings.HasPrefix(target, "socket:") {
			continue
		}
		if typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != unix.SOCK_DGRAM {
			continue
		}
		if proto, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil || proto != unix.IPPROTO_UDP {
			continue
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			continue
		}
		switch a := sa.(type) {
		case *unix.SockaddrInet4:
			if a.Port == port {
				fds = append(fds, fd)
			}
		case *unix.SockaddrInet6:
			if a.Port == port {
				fds = append(fds, fd)
			}
		}
	}
	return fds
}

// ethtoolFlag reads one of the legacy ethtool on/off settings (ETHTOOL_GTSO, …) of a
// link in the current network namespace, as `ethtool -k` shows them.
func ethtoolFlag(link string, cmd uint32) (bool, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	value := struct{ cmd, data uint32 }{cmd: cmd}
	var ifr struct {
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [24 - unsafe.Sizeof(uintptr(0))]byte
	}
	copy(ifr.name[:], link)
	ifr.data = unsafe.Pointer(&value)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return false, errno
	}
	return value.data != 0, nil
}
