package lab

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CoreDNSImage is the lab's cluster DNS image: the pinned CoreDNS build
// (hack/tools/coredns) alone in a layer.
const CoreDNSImage = RegistryAddr + "/mcnet/coredns:lab"

// coreDNSImageArchive writes CoreDNSImage as an archive `ctr images import` takes, from
// the newest CoreDNS build under bin/coredns, with a fixed creation time so the same
// binary always gives the same image.
func coreDNSImageArchive(root, dir string) (string, error) {
	path, err := coreDNSBinary(root)
	if err != nil {
		return "", err
	}
	bin, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "coredns", Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
		return "", err
	}
	if _, err := tw.Write(bin); err != nil {
		return "", err
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	layer, err := tarball.LayerFromReader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		return "", err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return "", err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return "", err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config = v1.Config{Entrypoint: []string{"/coredns"}}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return "", err
	}
	ref, err := name.NewTag(CoreDNSImage)
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "coredns-image.tar")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if err := tarball.WriteToFile(out, ref, img); err != nil {
		return "", fmt.Errorf("coredns image: %w", err)
	}
	return out, nil
}

// clusterDNSManifest is the cluster's DNS as kubeadm installs it — CoreDNS behind
// kube-system/kube-dns at the ClusterIP every kubelet puts into pods' resolv.conf —
// with one addition a platform team makes for mcnet: the rendered ConfigMap
// kube-system/mcnet-coredns mounted (optional) and its server blocks imported, which
// forward the clusterset domain to mcnet's DNS.
const clusterDNSManifest = `apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects:
- {kind: ServiceAccount, name: coredns, namespace: kube-system}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:53 {
        errors
        health :8080
        ready :8181
        kubernetes %[1]s in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
        }
        cache 5
    }
    import /etc/coredns/mcnet/*.server
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  replicas: 1
  selector:
    matchLabels: {k8s-app: kube-dns}
  template:
    metadata:
      labels: {k8s-app: kube-dns}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      tolerations:
      - {key: node-role.kubernetes.io/control-plane, effect: NoSchedule}
      containers:
      - name: coredns
        image: %[2]s
        imagePullPolicy: IfNotPresent
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {name: dns, containerPort: 53, protocol: UDP}
        - {name: dns-tcp, containerPort: 53, protocol: TCP}
        readinessProbe:
          httpGet: {path: /ready, port: 8181}
          periodSeconds: 2
        livenessProbe:
          httpGet: {path: /health, port: 8080}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {add: [NET_BIND_SERVICE], drop: [ALL]}
        volumeMounts:
        - {name: config, mountPath: /etc/coredns, readOnly: true}
        - {name: mcnet, mountPath: /etc/coredns/mcnet, readOnly: true}
      volumes:
      - name: config
        configMap: {name: coredns}
      - name: mcnet
        configMap: {name: mcnet-coredns, optional: true}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  selector: {k8s-app: kube-dns}
  clusterIP: %[3]s
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 53}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
`

// StartClusterDNS deploys the cluster's DNS (see clusterDNSManifest) and waits until it
// is ready. Call it after the fleet's overlay is applied, so CoreDNS starts with the
// clusterset server block; the lab does this in fleetlab.Install.
func (c *Cluster) StartClusterDNS(ctx context.Context) error {
	y := fmt.Sprintf(clusterDNSManifest, clusterDomain, CoreDNSImage, ClusterDNSIP(c.ServiceCIDR))
	if err := c.ApplyYAML(ctx, []byte(y)); err != nil {
		return fmt.Errorf("cluster %s DNS: %w", c.Name, err)
	}
	return Eventually(ctx, 90*time.Second, func(ctx context.Context) error {
		d, err := c.Client.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Status.ReadyReplicas < 1 {
			return fmt.Errorf("cluster %s: CoreDNS not ready", c.Name)
		}
		return nil
	})
}
