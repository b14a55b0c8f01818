// Package dataplane is the only mcnet code that touches the kernel. It turns the desired
// state of one node (remote clusters, their CIDRs, the cables to their gateways and the
// path to this cluster's active gateway) into links, routes, ip rules, neighbour and FDB
// entries, WireGuard peers, an nftables table and sysctls, and removes them again.
//
// The contract is the one of tailscale's router.Set: [Dataplane.Apply] takes the whole
// State, computes a pure plan, adds what is missing before it deletes what is stale, and
// is safe to call again with the same or any other State. [Dataplane.Cleanup] removes
// everything the package ever created on the node.
//
// What a node gets:
//
//   - Routes to remote CIDRs live in an mcnet routing table ([Config.Table]) selected by
//     one "to <remote CIDR> lookup <table>" ip rule per remote CIDR, so the host's main
//     table is never written.
//   - The active gateway owns the cables: one VXLAN device for every vxlan remote (static
//     FDB and neighbour entries, no learning, no ARP across clusters) and one WireGuard
//     device for every wireguard remote (the kernel module when present, otherwise an
//     embedded wireguard-go device configured through its UAPI socket, so wg(8) works).
//   - Every other node reaches the active gateway through an intra-cluster VXLAN device;
//     replies come back through the cluster's own network (the CNI), so reverse-path
//     filtering is set to loose where that asymmetry happens.
//   - One nftables table, inet <chainprefix> ("inet mcnet"), programmed through netlink
//     (no iptables or nft binary), replaced whole in one transaction when it differs
//     from the State and not touched when it does not. It keeps the source address of
//     traffic between local and remote CIDRs (no masquerade by the CNI or kube-proxy),
//     clamps the TCP MSS of SYNs entering a tunnel to its MTU, and drops VXLAN frames
//     of mcnet's VNIs from anyone but the remote gateways (the intra-cluster VXLAN:
//     on the gateway anyone but the cluster's nodes, on other nodes anyone but the
//     active gateway). It accepts nothing: the host
//     firewall, kube-proxy and NetworkPolicy still judge cross-cluster traffic, so a
//     host whose forward policy drops must allow the local and remote CIDRs itself.
//
// Tunnel MTUs are the underlay MTU minus the driver overhead (VXLAN 50 bytes over IPv4,
// 70 over IPv6; WireGuard 80 so that IPv4 and IPv6 underlays are both safe).
package dataplane
