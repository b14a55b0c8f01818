package probe

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
)

// Wire format. TCP streams begin with a hello and the server answers, once the client
// has closed its sending side, with what it received. UDP packets carry the same
// session tag and a sequence number; the server echoes the first udpHeaderLen bytes,
// never the padding, so only the forward direction carries large packets.
const (
	tcpMagic     = "MCNT"
	udpMagic     = "MCNU"
	wireVersion  = 1
	tagLen       = 16
	helloLen     = 4 + 1 + 1 + 2 + tagLen // magic, version, kind, reserved, tag
	reportLen    = 16                     // bytes received, nanoseconds from first byte to EOF
	udpHeaderLen = 4 + 1 + 1 + 2 + tagLen + 8

	kindThroughput = 'T'
	kindEcho       = 'E'
)

// sessionTag is what goes on the wire instead of the session itself.
type sessionTag [tagLen]byte

func tagOf(session string) sessionTag {
	sum := sha256.Sum256([]byte("mcnet-probe\x00" + session))
	var t sessionTag
	copy(t[:], sum[:])
	return t
}

var errBadPacket = errors.New("not a probe packet of this session")

func putHello(b []byte, kind byte, tag sessionTag) {
	copy(b, tcpMagic)
	b[4] = wireVersion
	b[5] = kind
	copy(b[8:], tag[:])
}

func checkHello(b []byte, tag sessionTag) (kind byte, err error) {
	if len(b) < helloLen || string(b[:4]) != tcpMagic || b[4] != wireVersion || [tagLen]byte(b[8:8+tagLen]) != tag {
		return 0, errBadPacket
	}
	return b[5], nil
}

func putUDP(b []byte, tag sessionTag, seq uint64) {
	copy(b, udpMagic)
	b[4] = wireVersion
	b[5] = kindEcho
	copy(b[8:], tag[:])
	binary.BigEndian.PutUint64(b[8+tagLen:], seq)
}

func parseUDP(b []byte, tag sessionTag) (seq uint64, err error) {
	if len(b) < udpHeaderLen || string(b[:4]) != udpMagic || b[4] != wireVersion || [tagLen]byte(b[8:8+tagLen]) != tag {
		return 0, errBadPacket
	}
	return binary.BigEndian.Uint64(b[8+tagLen:]), nil
}
