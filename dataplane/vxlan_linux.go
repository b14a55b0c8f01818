package dataplane

import (
	"encoding/binary"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// rtnl is the kernel's netlink handle plus the one request the netlink package
// cannot make: a VXLAN link with a zero outer UDP checksum (it sends
// IFLA_VXLAN_UDP_CSUM only when true, and the kernel's default is on).
type rtnl struct {
	*netlink.Handle
	sock *nl.SocketHandle // in the handle's network namespace
}

// newRTNL opens the handles in the calling thread's network namespace.
func newRTNL() (*rtnl, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, err
	}
	s, err := nl.GetNetlinkSocketAt(netns.None(), netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		h.Close()
		return nil, err
	}
	return &rtnl{Handle: h, sock: &nl.SocketHandle{Socket: s}}, nil
}

// Close closes both sockets.
func (r *rtnl) Close() {
	r.sock.Close()
	r.Handle.Close()
}

// LinkAdd is netlink's, except for a VXLAN without UDPCSum.
func (r *rtnl) LinkAdd(link netlink.Link) error {
	vx, ok := link.(*netlink.Vxlan)
	if !ok || vx.UDPCSum {
		return r.Handle.LinkAdd(link)
	}
	a := vx.Attrs()
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: r.sock}
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(a.Name)))
	if a.MTU > 0 {
		req.AddData(nl.NewRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(a.MTU))))
	}
	if len(a.HardwareAddr) > 0 {
		req.AddData(nl.NewRtAttr(unix.IFLA_ADDRESS, []byte(net.HardwareAddr(a.HardwareAddr))))
	}
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("vxlan"))
	data := info.AddRtAttr(nl.IFLA_INFO_DATA, nil)
	data.AddRtAttr(nl.IFLA_VXLAN_ID, nl.Uint32Attr(uint32(vx.VxlanId)))
	if vx.Port > 0 {
		data.AddRtAttr(nl.IFLA_VXLAN_PORT, binary.BigEndian.AppendUint16(nil, uint16(vx.Port)))
	}
	data.AddRtAttr(nl.IFLA_VXLAN_LEARNING, boolAttr(vx.Learning))
	data.AddRtAttr(nl.IFLA_VXLAN_UDP_CSUM, boolAttr(false))
	req.AddData(info)
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return err
	}
	return nil
}

func boolAttr(v bool) []byte {
	if v {
		return []byte{1}
	}
	return []byte{0}
}
