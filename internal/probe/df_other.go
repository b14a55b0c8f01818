//go:build !linux

package probe

import (
	"errors"
	"net"
	"syscall"
)

// setProbeDF is Linux-only: agents run on Linux nodes.
func setProbeDF(string, syscall.RawConn) error {
	return errors.New("path MTU probing needs Linux")
}

// socketMTU is not known off Linux; RouteMTU falls back to the source's interface.
func socketMTU(*net.UDPConn, bool) (int, bool) { return 0, false }
