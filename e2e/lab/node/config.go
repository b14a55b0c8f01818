package node

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/mcnet-io/mcnet/internal/cidr"
)

// writeConfig writes containerd's configuration, the kubelet's and the CNI network
// list.
func (n *Node) writeConfig() error {
	files := map[string][]byte{
		"containerd.toml": []byte(n.containerdConfig()),
		"kubelet.yaml":    []byte(n.kubeletConfig()),
		"resolv.conf":     []byte("nameserver 127.0.0.1\n"),
	}
	cni, err := n.cniConfig()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(n.path("cni"), 0o755); err != nil {
		return err
	}
	files["cni/10-lab.conflist"] = cni
	for name, b := range files {
		if err := os.WriteFile(n.path(name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// containerdConfig is containerd 1.6's configuration (version 2 schema). The CRI
// plugin restricts oom_score_adj because the lab runs without CAP_SYS_RESOURCE (runc
// otherwise fails to start sandboxes), uses runc with cgroupfs (as the kubelet does),
// and pulls every registry it knows through the lab's registry on the node's loopback.
func (n *Node) containerdConfig() string {
	var b strings.Builder
	fmt.Fprintf(&b, `version = 2
root = %q
state = "/run/containerd"
oom_score = 0
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = %q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
`, n.path("containerd"), n.Socket(), n.cfg.SandboxImage, n.path("cni"))
	hosts := make([]string, 0, len(n.cfg.Mirrors))
	for h := range n.cfg.Mirrors {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		fmt.Fprintf(&b, "  [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.%q]\n    endpoint = [%q]\n", h, n.cfg.Mirrors[h])
	}
	return b.String()
}

// kubeletConfig is the KubeletConfiguration. Notes on the choices that differ from a
// kubeadm node: cgroup v1 must be allowed explicitly; the cgroupRoot is the node's own
// cgroup so several kubelets share the host; eviction and image garbage collection are
// off because the host's disk and memory are shared by every node of every lab; the
// crash-loop back-off is capped at 2 s so a test that kills a component twice does not
// wait five minutes for it.
func (n *Node) kubeletConfig() string {
	dns := make([]string, len(n.cfg.ClusterDNS))
	for i, a := range n.cfg.ClusterDNS {
		dns[i] = fmt.Sprintf("%q", a.String())
	}
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /%s
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
containerRuntimeEndpoint: unix://%s
address: %s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: %s
tlsPrivateKeyFile: %s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %s}
authorization:
  mode: Webhook
clusterDomain: %s
clusterDNS: [%s]
resolvConf: %s
failSwapOn: false
protectKernelDefaults: false
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {}
evictionSoft: {}
localStorageCapacityIsolation: false
nodeStatusUpdateFrequency: 4s
nodeLeaseDurationSeconds: 10
nodeStatusReportFrequency: 10s
syncFrequency: 10s
fileCheckFrequency: 10s
shutdownGracePeriod: 0s
crashLoopBackOff:
  maxContainerRestartPeriod: 2s
podLogsDir: /var/log/pods
maxPods: 110
`, n.cfg.Cgroup, n.Socket(), n.cfg.IP, n.cfg.ServingCert, n.cfg.ServingKey, n.cfg.ClientCAFile,
		n.cfg.ClusterDomain, strings.Join(dns, ", "), n.path("resolv.conf"))
}

// cniConfig is a ptp network with host-local addresses from the node's slice: each pod
// gets a veth whose node end holds the slice's first address, and traffic is routed,
// not bridged, so kube-proxy and mcnet see it in the node's namespace. The address
// state lives in the node's directory, so nodes never hand out each other's addresses.
func (n *Node) cniConfig() ([]byte, error) {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "lab",
		"plugins": []any{
			map[string]any{
				"type":   "ptp",
				"ipMasq": false,
				"mtu":    1500,
				"ipam": map[string]any{
					"type":    "host-local",
					"dataDir": n.path("cni-ipam"),
					"ranges": [][]map[string]string{{{
						"subnet":     n.cfg.PodCIDR.String(),
						"gateway":    cidr.Nth(n.cfg.PodCIDR, 1).String(),
						"rangeStart": cidr.Nth(n.cfg.PodCIDR, 2).String(),
					}}},
					"routes": []map[string]string{{"dst": "0.0.0.0/0"}},
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	return json.MarshalIndent(conf, "", "  ")
}
