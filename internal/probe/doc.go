// Package probe measures the network between two nodes of different clusters, the way
// production traffic crosses it: TCP throughput over one or more streams (like iperf3),
// UDP echo round trips, and the path MTU with the don't-fragment bit set.
//
// A Server answers all three on one port (TCP and UDP); Throughput, Latency and PathMTU
// are the client side. Both ends carry a session identifier so a server answers only
// the client that was meant to reach it.
//
// RunAgent is the part the in-cluster agents (mcnet-gateway, mcnet-route-agent) run: it
// watches NetworkTest objects addressed to its node, serves or runs them and writes
// the result into their status. kubectl mcnet benchmark and diagnose create those
// objects, so measuring needs no image or pod beyond the agents already running.
package probe
