// Package cidr answers questions about the addresses of a network prefix.
package cidr

import "net/netip"

// Nth is the address n after the first (network) address of p; it may lie outside p
// when p is smaller than n+1 addresses.
func Nth(p netip.Prefix, n int) netip.Addr {
	a := p.Masked().Addr()
	for range n {
		a = a.Next()
	}
	return a
}

// Last is the highest address of p (the broadcast address of an IPv4 subnet).
func Last(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
