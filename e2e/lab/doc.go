// Package lab brings up several real Kubernetes clusters on one Linux host for
// end-to-end tests, benchmarks and the `make lab` demo.
//
// Per cluster it runs a real etcd, kube-apiserver and kube-controller-manager in a
// control-plane network namespace that also holds the cluster's node LAN (a bridge).
// Every node is a network namespace on that LAN running the real kube-proxy; pods are
// namespaces behind routed veths of their node, registered as Pod objects whose status
// is kept Running and Ready so the real EndpointSlice controller lists them. Gateway
// nodes get a second interface on a WAN namespace shared by all clusters, optionally
// through a 1:1 NAT router namespace so their public and private addresses differ.
//
// The mcnet binaries run the way a kubelet would run them: a small kubelet (see
// kubelet.go) watches the Deployments and DaemonSets applied to each cluster in
// namespace mcnet-system and starts their containers as processes in node or pod
// namespaces, with a token minted for the pod's service account.
//
// Nothing touches the host's network namespace: every address lives in a namespace the
// lab created, and the API servers are reached from the host through a loopback proxy
// that dials inside the control-plane namespace. Every name starts with "mcl" and a run
// id, so a lab left behind by a killed run is recognised and removed by CleanStale.
package lab
