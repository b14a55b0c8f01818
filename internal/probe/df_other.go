//go:build !linux

package probe

import (
	"errors"
	"syscall"
)

// setProbeDF is Linux-only: agents run on Linux nodes.
func setProbeDF(string, syscall.RawConn) error {
	return errors.New("path MTU probing needs Linux")
}
