// Package lab brings up several real Kubernetes clusters on one Linux host for
// end-to-end tests, benchmarks and the `make lab` demo.
//
// Per cluster it runs a real etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler in a control-plane network namespace that also holds the cluster's
// node LAN (a bridge). Every node is a network namespace on that LAN running
// containerd, the kubelet and kube-proxy; pods are what the kubelet starts, on routed
// pod slices of their node. Gateway nodes get a second interface on a WAN namespace
// shared by all clusters, optionally through a 1:1 NAT router namespace so their
// public and private addresses differ.
//
// mcnet's components run as the Deployments and DaemonSets applied to each cluster,
// under a real kubelet and containerd per node (package node).
//
// This package composes the lab; each concern has its own package, which imports
// nothing from this one: network (address plan, namespaces, links, NAT, commands and
// sockets inside a namespace), pki (CA, certificates, kubeconfigs), controlplane
// (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, the host proxy),
// node (containerd and the kubelet) and proc (processes in a namespace). What stays
// here is what needs several of them or the clusters' API: laying out clusters and
// nodes, registering Nodes, kube-proxy, pods, workloads, failures, dumps and clean-up
// of stale labs.
//
// Nothing touches the host's network namespace: every address lives in a namespace the
// lab created, and the API servers are reached from the host through a loopback proxy
// that dials inside the control-plane namespace. Every name starts with "mcl" and a run
// id, so a lab left behind by a killed run is recognised and removed by CleanStale.
package lab
