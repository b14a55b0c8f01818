package diagnose

// Entry documents one finding code: its area and the hint printed with it (why it
// matters and what to do). docs/diagnose.md explains each code at length; a test keeps
// the two in step.
type Entry struct {
	Area  string
	Title string
	Hint  string
}

// Catalog lists every finding code. Codes are stable: never reuse or renumber one.
var Catalog = map[string]Entry{
	"MCN1001": {"kubernetes", "mcnet is not installed", "the mcnet-controller Deployment is missing in mcnet-system; sync the cluster's overlay (clusters/NAME) with Flux or Argo CD"},
	"MCN1002": {"kubernetes", "controller not available", "no ready mcnet-controller replica: kubectl -n mcnet-system describe deploy/mcnet-controller and check its logs"},
	"MCN1003": {"kubernetes", "gateway DaemonSet not ready", "some gateway pods are not ready: kubectl -n mcnet-system get pods -l app.kubernetes.io/name=mcnet-gateway -o wide"},
	"MCN1004": {"kubernetes", "route agent DaemonSet not ready", "nodes without a ready route agent cannot reach other clusters: kubectl -n mcnet-system get pods -l app.kubernetes.io/name=mcnet-route-agent -o wide"},
	"MCN1005": {"kubernetes", "cluster unreachable", "the plugin cannot reach this API server: check the kubeconfig context, VPN and credentials"},

	"MCN1101": {"broker", "broker settings missing", "the controller's config (ConfigMap mcnet-config) names no broker: render the fleet again and sync it"},
	"MCN1102": {"broker", "broker credentials missing", "create Secret mcnet-system/mcnet-broker-credentials with key kubeconfig (kubectl mcnet broker credentials --cluster NAME)"},
	"MCN1103": {"broker", "broker unreachable", "the broker API server does not answer, from here or from the cluster's own nodes: is it up, and do the clusters' firewalls and routes let them reach its URL?"},
	"MCN1104": {"broker", "broker credentials rejected", "the broker refuses the token: mint new credentials for this cluster and replace the Secret"},
	"MCN1105": {"broker", "broker credentials lack permissions", "the cluster cannot publish its own objects: sync broker/ (the cluster's Role and RoleBinding) on the broker"},
	"MCN1106": {"broker", "broker credentials too broad", "a cluster's identity can read Secrets or write elsewhere; bind it only to its rendered Role in the broker namespace"},
	"MCN1107": {"broker", "cluster not published on the broker", "the controller has not announced the cluster: check the controller's logs for broker errors"},
	"MCN1108": {"broker", "cluster exports more than its maxExports", "receivers import only a cluster's maxExports oldest exports (the fleet file's spec.clusters[].maxExports, default 512) and ignore its newest: if the exports are wanted, raise maxExports for that cluster in the fleet file, render and sync; if not, unexport them, or check that cluster and rotate its broker credentials"},

	"MCN1201": {"networks", "overlapping CIDRs", "routing cannot tell overlapping networks apart: give every cluster its own pod and service CIDRs"},
	"MCN1202": {"networks", "local Cluster object missing", "the controller has not announced this cluster: check the controller's logs"},
	"MCN1203": {"networks", "remote cluster unknown", "this cluster has no Cluster object of a fleet member: the broker sync is broken on one side (see broker checks)"},
	"MCN1204": {"networks", "node pod CIDR outside announced CIDRs", "the fleet file's podCIDRs do not match the nodes' pod CIDRs; fix the fleet file and render again"},
	"MCN1205": {"networks", "cluster publishes outside its allocation", "receivers ignore what a member publishes outside what the fleet table (Git) allocates to it: its own controller or gateway is misconfigured, or its broker credentials are in the wrong hands; check that cluster, rotate its broker credentials if in doubt"},

	"MCN1206": {"networks", "clusters disagree on the global address map", "two clusters hold different fleet tables, so they reach a remapped cluster at different global ranges: sync every cluster's overlay (bases/fleet) from the same commit"},
	"MCN1207": {"datapath", "remap chains differ from the fleet table", "the active gateway's kernel does not translate the global ranges Git allocates to this cluster: check the gateway's logs for apply errors; it repairs its chains within 30 s unless something else rewrites mcnet's nftables table"},

	"MCN1301": {"gateways", "no gateway node", "no node carries the gateway label: kubectl label node NODE node-restriction.kubernetes.io/mcnet-gateway=true (or the cluster's gateway nodeSelector)"},
	"MCN1302": {"gateways", "no active gateway", "no gateway holds the Lease: check the mcnet-gateway pods and their logs"},
	"MCN1303": {"gateways", "more than one active gateway", "two gateways claim the Lease: traffic splits between them; check clock skew and the gateways' logs"},
	"MCN1304": {"gateways", "active gateway on an unlabelled node", "the active gateway's node lost the gateway label; relabel it or let another gateway take over"},
	"MCN1305": {"gateways", "Endpoint missing or stale", "other clusters reach this one through its Endpoint; the active gateway must publish it (check the gateway's logs)"},
	"MCN1306": {"gateways", "standby cannot reach the active gateway", "a standby gets no answer on the active gateway node's liveness port (UDP 4802): allow it between gateway nodes, or a slow API server can cause needless failovers"},
	"MCN1307": {"gateways", "gateway status expired", "a Gateway says active but stopped renewing its heartbeat (status.expireTime passed): its gateway is not running, and DNS and the ClusterSetIPs no longer count it. Is its node up? kubectl -n mcnet-system get pods -l app.kubernetes.io/name=mcnet-gateway -o wide; a standby takes over within seconds where there is one"},

	"MCN1401": {"connections", "tunnel in error", "probes through the tunnel fail: read the message, then the cable port and MTU checks below"},
	"MCN1402": {"connections", "tunnel not connected yet", "the cable is configured but no probe has passed: wait a few seconds; if it stays, the remote gateway or the cable port is unreachable"},
	"MCN1403": {"connections", "no tunnel to a known cluster", "the active gateway has no connection to a cluster it knows: check the remote's Endpoint and the gateway's logs"},
	"MCN1404": {"connections", "packet loss through a tunnel", "probes are lost through the tunnel: check the WAN path and the gateways' load"},
	"MCN1405": {"connections", "cable port blocked", "the gateways reach each other over UDP but not on the cable port: open the cable's UDP port between the gateways' public addresses"},
	"MCN1406": {"connections", "path MTU smaller than tunnel MTU", "packets the tunnel accepts are lost on the way: lower the underlay/tunnel MTU or fix the WAN MTU (and allow ICMP fragmentation-needed)"},
	"MCN1407": {"connections", "probe could not run", "the agents did not run the NetworkTest: make sure mcnet-gateway is running and up to date"},

	"MCN1501": {"datapath", "CNI not detected", "mcnet works with most CNIs but could not tell which one runs here; see docs/diagnose.md for what to check"},
	"MCN1502": {"datapath", "kube-proxy in IPVS mode", "mcnet is tested with kube-proxy iptables and nftables modes; IPVS may drop service traffic from remote clusters"},
	"MCN1503": {"datapath", "Calico would SNAT remote traffic", "create Calico IPPools for every remote cluster's CIDRs with natOutgoing: false and disabled: true"},

	"MCN1601": {"versions", "components at different versions", "a cluster's controller, gateway and route agent should run the same version: finish the rollout or sync again"},
	"MCN1602": {"versions", "clusters at different versions", "clusters more than one minor version apart may not understand each other's objects: upgrade them together"},
	"MCN1603": {"versions", "plugin and clusters at different versions", "use a kubectl-mcnet of the same minor version as the clusters (kubectl krew upgrade mcnet)"},

	"MCN1701": {"dns", "mcnet DNS service missing", "Service mcnet-system/mcnet-dns is missing or has no ClusterIP: sync the cluster's overlay"},
	"MCN1702": {"dns", "CoreDNS does not use the clusterset server block", "mount ConfigMap kube-system/mcnet-coredns into the CoreDNS Deployment at /etc/coredns/mcnet (optional: true) and add `import /etc/coredns/mcnet/*.server` to the Corefile"},
	"MCN1703": {"dns", "CoreDNS configuration not found", "no coredns ConfigMap (or Deployment) in kube-system could be read: make sure the cluster DNS forwards the clusterset domain to Service mcnet-system/mcnet-dns"},
	"MCN1704": {"dns", "CoreDNS server block missing", "ConfigMap kube-system/mcnet-coredns is rendered into each cluster's overlay: sync the overlay (Flux Kustomization or Argo CD Application)"},
	"MCN1705": {"dns", "CoreDNS server block points elsewhere", "the mcnet-dns Service is not at the fleet's dnsServiceIPs: render again and sync, or set dnsServiceIPs to the Service's ClusterIPs"},

	"MCN1801": {"gitops", "fleet file invalid", "fix the fleet file; kubectl mcnet render refuses it too"},
	"MCN1802": {"gitops", "kustomization does not build", "Flux and Argo CD fail on this directory: render again instead of editing generated files"},
	"MCN1803": {"gitops", "rendered tree out of date", "the tree differs from what the fleet file renders: kubectl mcnet render -f FLEET --out DIR and commit"},
	"MCN1804": {"gitops", "live object drifted from Git", "someone changed the object in the cluster; Flux/Argo CD will revert it, or put the change in the fleet file"},
	"MCN1805": {"gitops", "rendered object missing in the cluster", "the GitOps sync has not applied it: check the Flux Kustomization or Argo CD Application"},
	"MCN1806": {"gitops", "not a rendered tree", "--repo must be a directory kubectl mcnet render wrote (it has a .mcnet-render index)"},
}
