package probe

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// setProbeDF sets the don't-fragment bit on a UDP socket and makes the kernel ignore
// its cached path MTU for it (IP_PMTUDISC_PROBE, see ip(7)), so PathMTU measures the
// path rather than the cache.
func setProbeDF(network string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		if network == "udp6" {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_PROBE)
			return
		}
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE)
	})
	if err != nil {
		return err
	}
	return serr
}

// socketMTU is the MTU of a connected socket's route (IP_MTU, IPV6_MTU; see ip(7)).
func socketMTU(c *net.UDPConn, v6 bool) (int, bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var mtu int
	var serr error
	err = rc.Control(func(fd uintptr) {
		if v6 {
			mtu, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MTU)
			return
		}
		mtu, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU)
	})
	if err != nil || serr != nil || mtu <= 0 {
		return 0, false
	}
	return mtu, true
}
