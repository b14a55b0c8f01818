// Package operate_test runs show, diagnose and export against real API servers with
// mcnet objects written directly, as the gateway and controller would.
package operate_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/cli"
	"github.com/mcnet-io/mcnet/internal/fleet"
	"github.com/mcnet-io/mcnet/internal/testenv"
	"github.com/mcnet-io/mcnet/kustomize"
)

// kubeconfig writes one kubeconfig with a context per cluster.
func kubeconfig(t *testing.T, names []string, cfgs []*rest.Config) string {
	kc := clientcmdapi.NewConfig()
	for i, n := range names {
		kc.Clusters[n] = &clientcmdapi.Cluster{Server: cfgs[i].Host, CertificateAuthorityData: cfgs[i].CAData}
		kc.AuthInfos[n] = &clientcmdapi.AuthInfo{ClientCertificateData: cfgs[i].CertData, ClientKeyData: cfgs[i].KeyData, Token: cfgs[i].BearerToken}
		kc.Contexts[n] = &clientcmdapi.Context{Cluster: n, AuthInfo: n}
	}
	kc.CurrentContext = names[0]
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func run(t *testing.T, args ...string) (int, string) {
	t.Helper()
	code, out, _ := runErr(t, args...)
	return code, out
}

// runErr is run that also returns what went to stderr.
func runErr(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = cli.Run(t.Context(), genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, args)
	t.Logf("kubectl mcnet %s → %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
	return code, out.String(), errOut.String()
}

// install applies the rendered CRDs and cluster overlay, then writes the objects the
// controller and gateway would: Clusters, Endpoint, Gateways with status.
func install(t *testing.T, cfg *rest.Config, repo *testenv.Repo, id string, clusters map[string][2]string, gateways map[string]mcnetv1.GatewayStatus, gatewayLabel map[string]bool) {
	ctx := t.Context()
	testenv.Apply(ctx, t, cfg, repo.Build(t, kustomize.DirCRDs))
	testenv.Apply(ctx, t, cfg, repo.Build(t, "clusters/"+id))
	c := testenv.Client(t, cfg)
	for cid, nets := range clusters {
		cl := &mcnetv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: cid, Namespace: mcnetv1.SystemNamespace},
			Spec: mcnetv1.ClusterObjSpec{ClusterID: cid, PodCIDRs: []string{nets[0]}, ServiceCIDRs: []string{nets[1]}, Cable: mcnetv1.CableVXLAN}}
		must(t, c.Create(ctx, cl))
	}
	for node, st := range gateways {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}
		if gatewayLabel[node] {
			n.Labels = map[string]string{mcnetv1.GatewayLabel: "true"}
		}
		must(t, c.Create(ctx, n))
		gw := &mcnetv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: node, Namespace: mcnetv1.SystemNamespace}}
		must(t, c.Create(ctx, gw))
		gw.Status = st
		must(t, c.Status().Update(ctx, gw))
		if st.HAStatus == mcnetv1.HAActive {
			ep := &mcnetv1.Endpoint{ObjectMeta: metav1.ObjectMeta{Name: id, Namespace: mcnetv1.SystemNamespace},
				Spec: mcnetv1.EndpointSpec{ClusterID: id, Hostname: node, Cable: mcnetv1.CableVXLAN, Port: 4789, PrivateIPs: []string{"198.18.0.1"}, Subnets: []string{clusters[id][0]}}}
			must(t, client.IgnoreAlreadyExists(c.Create(ctx, ep)))
		}
	}
	var d appsv1.Deployment
	must(t, c.Get(ctx, client.ObjectKey{Namespace: mcnetv1.SystemNamespace, Name: "mcnet-controller"}, &d))
	d.Status = appsv1.DeploymentStatus{Replicas: 1, ReadyReplicas: 1, AvailableReplicas: 1}
	must(t, c.Status().Update(ctx, &d))
}

// coreDNSDeployment is a CoreDNS Deployment as kubeadm names it, with the rendered
// server block mounted where the Corefile imports it.
func coreDNSDeployment() *appsv1.Deployment {
	labels := map[string]string{"k8s-app": "kube-dns"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "coredns", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: "coredns", Image: "coredns", VolumeMounts: []corev1.VolumeMount{
						{Name: "config-volume", MountPath: "/etc/coredns"}, {Name: "mcnet", MountPath: "/etc/coredns/mcnet/"},
					}}},
					Volumes: []corev1.Volume{
						{Name: "config-volume", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "coredns"}}}},
						{Name: "mcnet", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: mcnetv1.CoreDNSConfigMap}, Optional: ptr.To(true)}}},
					},
				},
			},
		},
	}
}

func loadFleet(t *testing.T) *mcnetv1.ClusterSet {
	t.Helper()
	cs, err := fleet.Load("../../../kustomize/testdata/fleet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestShowDiagnoseExport(t *testing.T) {
	cs := loadFleet(t)
	cfgs := testenv.StartClusterAPIServers(t, cs.Spec.Clusters[:2])
	tree, err := kustomize.Render(cs, kustomize.Options{Version: "v0.1.0"})
	must(t, err)
	repo := testenv.NewRepo(t, tree)
	east, west := cs.Spec.Clusters[0], cs.Spec.Clusters[1]
	nets := map[string][2]string{}
	for _, c := range cs.Spec.Clusters[:2] {
		nets[c.Name] = [2]string{c.PodCIDRs[0], c.ServiceCIDRs[0]}
	}
	now := metav1.NewTime(time.Now().Add(-time.Hour))
	install(t, cfgs[0], repo, east.Name, nets, map[string]mcnetv1.GatewayStatus{
		"east-gw1": {HAStatus: mcnetv1.HAActive, Cable: mcnetv1.CableVXLAN, Connections: []mcnetv1.Connection{{
			Cluster: west.Name, Status: mcnetv1.ConnectionError, Message: "no probe replies from 10.2.0.1 for 9 s", LastTransitionTime: &now}}},
		// A standby that gets no answer from the active gateway's liveness port.
		"east-gw2": {HAStatus: mcnetv1.HAPassive, Conditions: []metav1.Condition{{Type: mcnetv1.GatewayConditionActiveReachable, Status: metav1.ConditionFalse,
			Reason: "NoAnswer", Message: "active gateway east-gw1 does not answer on UDP 4802 of its node", LastTransitionTime: now}}},
	}, map[string]bool{"east-gw1": true, "east-gw2": true})
	install(t, cfgs[1], repo, west.Name, nets, map[string]mcnetv1.GatewayStatus{
		"west-gw1": {HAStatus: mcnetv1.HAActive, Cable: mcnetv1.CableVXLAN, Connections: []mcnetv1.Connection{{Cluster: east.Name, Status: mcnetv1.Connected, RTT: &mcnetv1.RTTStats{Avg: metav1.Duration{Duration: time.Millisecond}}}}},
		"west-gw2": {HAStatus: mcnetv1.HAActive},
	}, map[string]bool{"west-gw1": true})
	kc := kubeconfig(t, []string{"ctx-east", "ctx-west"}, cfgs)

	code, out := run(t, "show", "all", "--kubeconfig", kc)
	if code != 0 || !strings.Contains(out, "cluster "+east.Name+" (context ctx-east)") || !strings.Contains(out, "error") {
		t.Errorf("show all: exit %d, want 0 with a block per cluster and the error connection", code)
	}
	code, out = run(t, "show", "connections", "--kubeconfig", kc, "-o", "json")
	var rep map[string]any
	must(t, json.Unmarshal([]byte(out), &rep))
	if code != 0 || rep["kind"] != "ShowReport" || rep["apiVersion"] != "mcnet.io/v1alpha1" {
		t.Errorf("show -o json: exit %d kind %v", code, rep["kind"])
	}

	kubeconfigFlags(t, kc, cfgs, east.Name, west.Name)

	repoDir := t.TempDir()
	must(t, kustomize.Write(repoDir, tree))
	// Drift: change a live object the tree renders.
	c := testenv.Client(t, cfgs[0])
	var ds appsv1.DaemonSet
	must(t, c.Get(t.Context(), client.ObjectKey{Namespace: mcnetv1.SystemNamespace, Name: "mcnet-gateway"}, &ds))
	ds.Spec.Template.Spec.Containers[0].Args = append(ds.Spec.Template.Spec.Containers[0].Args, "--probe-interval=5s")
	must(t, c.Update(t.Context(), &ds))

	// CoreDNS: east imports the rendered server block from where its Deployment mounts
	// it; west's Corefile does neither, and its block was edited to point elsewhere.
	must(t, c.Create(t.Context(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "coredns"},
		Data: map[string]string{"Corefile": ".:53 {\n    errors\n    forward . /etc/resolv.conf\n}\nimport /etc/coredns/mcnet/*.server\n"}}))
	must(t, c.Create(t.Context(), coreDNSDeployment()))
	cw := testenv.Client(t, cfgs[1])
	must(t, cw.Create(t.Context(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "coredns"},
		Data: map[string]string{"Corefile": ".:53 {\n    forward . /etc/resolv.conf\n}\n"}}))
	var block corev1.ConfigMap
	must(t, cw.Get(t.Context(), client.ObjectKey{Namespace: "kube-system", Name: mcnetv1.CoreDNSConfigMap}, &block))
	block.Data[mcnetv1.CoreDNSServerKey] = "clusterset.local:53 {\n    forward . 10.9.9.9\n}\n"
	must(t, cw.Update(t.Context(), &block))

	code, out = run(t, "diagnose", "--kubeconfig", kc, "--probe=false", "--repo", repoDir, "-o", "json")
	var drep struct {
		Kind   string
		Checks []struct{ Code, Cluster, Result, Message string }
	}
	must(t, json.Unmarshal([]byte(out), &drep))
	found := map[string]string{}
	for _, ch := range drep.Checks {
		if ch.Code != "" {
			found[ch.Code+"/"+ch.Cluster] = ch.Message
		}
	}
	for _, want := range []string{"MCN1401/" + east.Name, "MCN1303/" + west.Name, "MCN1304/" + west.Name, "MCN1804/" + east.Name, "MCN1702/" + west.Name, "MCN1705/" + west.Name, "MCN1306/" + east.Name} {
		if _, ok := found[want]; !ok {
			t.Errorf("diagnose did not report %s; found %v", want, found)
		}
	}
	for _, unwanted := range []string{"MCN1701/", "MCN1702/", "MCN1703/", "MCN1704/", "MCN1705/"} {
		if msg, ok := found[unwanted+east.Name]; ok {
			t.Errorf("diagnose reported %s%s for a CoreDNS that imports the block: %s", unwanted, east.Name, msg)
		}
	}
	if code != 1 || drep.Kind != "DiagnoseReport" {
		t.Errorf("diagnose: exit %d kind %q, want 1 DiagnoseReport", code, drep.Kind)
	}

	// Export against a real API server.
	must(t, c.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "app"}}))
	must(t, c.Create(t.Context(), &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "app"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 5432}}}}))
	if code, _ := run(t, "export", "service/db", "-n", "app", "--kubeconfig", kc, "--context", "ctx-east"); code != 0 {
		t.Errorf("export: exit %d", code)
	}
	var se mcsv1alpha1.ServiceExport
	must(t, c.Get(t.Context(), client.ObjectKey{Namespace: "app", Name: "db"}, &se))
	if code, _ := run(t, "export", "service/nope", "-n", "app", "--kubeconfig", kc, "--context", "ctx-east"); code != 1 {
		t.Errorf("export of a missing service: exit %d, want 1", code)
	}
	if code, out := run(t, "export", "svc/db", "-n", "app", "--dry-run=client", "-o", "yaml", "--kubeconfig", kc); code != 0 || !strings.Contains(out, "kind: ServiceExport") {
		t.Errorf("dry run: exit %d", code)
	}
	if code, _ := run(t, "unexport", "service/db", "-n", "app", "--kubeconfig", kc, "--context", "ctx-east"); code != 0 {
		t.Errorf("unexport: exit %d", code)
	}
	if err := c.Get(t.Context(), client.ObjectKey{Namespace: "app", Name: "db"}, &se); client.IgnoreNotFound(err) != nil || err == nil {
		t.Errorf("ServiceExport still there after unexport: %v", err)
	}
}

// kubeconfigFlags checks that show and diagnose honour the root's kubeconfig flags
// (each case printed the default clusters before they did) and print through
// cli-runtime's printers.
func kubeconfigFlags(t *testing.T, kc string, cfgs []*rest.Config, east, west string) {
	ctx := t.Context()
	dir := t.TempDir()
	// west's API server reached with nothing from the kubeconfig: --server, --token,
	// --certificate-authority only, as from a CI job with a ServiceAccount token.
	cw := testenv.Client(t, cfgs[1])
	must(t, cw.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "viewer"}}))
	must(t, cw.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "viewer-admin"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "default", Name: "viewer"}}}))
	token := testenv.Token(ctx, t, cfgs[1], "default", "viewer")
	ca := filepath.Join(dir, "west-ca.crt")
	must(t, os.WriteFile(ca, cfgs[1].CAData, 0o600))
	empty := filepath.Join(dir, "empty-kubeconfig")
	must(t, clientcmd.WriteToFile(*clientcmdapi.NewConfig(), empty))
	code, out := run(t, "show", "--kubeconfig", empty, "--server", cfgs[1].Host, "--token", token, "--certificate-authority", ca, "-o", "name")
	if code != 0 || out != "cluster.mcnet.io/"+west+"\n" {
		t.Errorf("show --server --token: exit %d, printed %q; want 0 and west only", code, out)
	}
	// --user picks another identity of the kubeconfig for the context.
	withNobody, err := clientcmd.LoadFromFile(kc)
	must(t, err)
	withNobody.AuthInfos["nobody"] = &clientcmdapi.AuthInfo{Token: "not-a-valid-token"}
	for _, c := range withNobody.Contexts {
		c.AuthInfo = "nobody-but-for-cert" // the cert user stays under its own name
	}
	withNobody.AuthInfos["nobody-but-for-cert"] = withNobody.AuthInfos["nobody"]
	nobodyKC := filepath.Join(dir, "kubeconfig-nobody")
	must(t, clientcmd.WriteToFile(*withNobody, nobodyKC))
	if code, out := run(t, "show", "--kubeconfig", nobodyKC, "--contexts", "ctx-east", "--user", "ctx-east", "-o", "name"); code != 0 || out != "cluster.mcnet.io/"+east+"\n" {
		t.Errorf("show --user with a good identity: exit %d %q, want 0 and east", code, out)
	}
	if code, _, stderr := runErr(t, "show", "--kubeconfig", kc, "--contexts", "ctx-east", "--user", "nobody-missing"); code != 2 {
		t.Errorf("show --user naming no identity: exit %d, want 2 (stderr %q)", code, stderr)
	}
	if code, _ := run(t, "show", "--kubeconfig", nobodyKC, "--contexts", "ctx-east"); code != 2 {
		t.Errorf("show as an identity the server refuses: exit %d, want 2", code)
	}
	// -n keeps one namespace's services.
	c := testenv.Client(t, cfgs[0])
	for _, ns := range []string{"shop", "other"} {
		must(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
		must(t, c.Create(ctx, &mcsv1alpha1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}}))
	}
	code, out = run(t, "show", "services", "--kubeconfig", kc, "--context", "ctx-east", "-n", "shop", "-o", "jsonpath={.clusters[*].services.exports[*].namespace}")
	if code != 0 || out != "shop" {
		t.Errorf("show services -n shop: exit %d, namespaces %q; want shop only", code, out)
	}
	// --cache-dir holds the discovery cache; -v 6 logs each request through the one logger.
	cache := filepath.Join(dir, "cache")
	code, _, stderr := runErr(t, "show", "--kubeconfig", kc, "--context", "ctx-east", "--cache-dir", cache, "-v", "6")
	if entries, _ := os.ReadDir(filepath.Join(cache, "discovery")); code != 0 || len(entries) == 0 {
		t.Errorf("show --cache-dir: exit %d, discovery cache entries %d; want the cache written", code, len(entries))
	}
	if !strings.Contains(stderr, `"verb": "GET", "url": "`+strings.TrimSuffix(cfgs[0].Host, "/")) {
		t.Errorf("show -v 6 logged no request to %s", cfgs[0].Host)
	}
	// Flags a verb cannot use are refused, not ignored.
	for _, args := range [][]string{
		{"diagnose", "--kubeconfig", kc, "-n", "app"},
		{"benchmark", "latency", "--kubeconfig", kc, "-n", "app"},
		{"version", "--context", "ctx-east"},
		{"diagnose", "--offline", "-f", "../../../kustomize/testdata/fleet.yaml", "--context", "ctx-east"},
		{"show", "--kubeconfig", kc, "--server", cfgs[0].Host, "--contexts", "ctx-east,ctx-west"},
		{"show", "--kubeconfig", kc, "-o", "xml"},
	} {
		if code, _ := run(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	if code, out := run(t, "diagnose", "--kubeconfig", kc, "--probe=false", "-o", "go-template={{.kind}} {{len .clusters}}"); code != 1 || out != "DiagnoseReport 2" {
		t.Errorf("diagnose -o go-template: exit %d, printed %q", code, out)
	}
}
