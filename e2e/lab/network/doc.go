// Package network builds the lab's network out of Linux network namespaces: the address
// plan, the namespaces themselves, the LAN and WAN bridges, veths, routes and NAT rules
// between them (Topology and Build), the cables a failure test pulls (SetCables), and
// the helpers everything else in the lab uses to reach into a namespace: running ip,
// iptables and sysctl there, and dialling or listening from inside it.
//
// It knows nothing of Kubernetes; package lab decides what runs where.
package network
