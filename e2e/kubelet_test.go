package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/mcnet-io/mcnet/e2e/lab"
	"github.com/mcnet-io/mcnet/e2e/lab/labtest"
)

// fakeWorkloads are what a render would apply: a service account with narrow RBAC, a
// Secret, a hostNetwork DaemonSet on gateway nodes and a Deployment with a readiness
// probe behind a Service. Both run the fake component.
const fakeWorkloads = `
apiVersion: v1
kind: Namespace
metadata: {name: mcnet-system}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: fake, namespace: mcnet-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: fake}
rules:
- {apiGroups: [""], resources: [nodes], verbs: [list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: fake}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: fake}
subjects: [{kind: ServiceAccount, name: fake, namespace: mcnet-system}]
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: mcnet-system}
stringData: {token: s3cret}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: fake-gateway, namespace: mcnet-system}
spec:
  selector: {matchLabels: {app: fake-gateway}}
  template:
    metadata: {labels: {app: fake-gateway}}
    spec:
      serviceAccountName: fake
      hostNetwork: true
      nodeSelector: {mcnet.io/gateway: "true"}
      containers:
      - name: gateway
        image: mcnet
        command: [/fake-component]
        args: [--report=/var/lib/fake/report.json, --read=/etc/fake/creds/token, --touch=/var/run/fake/touched]
        env:
        - {name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
        - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        - {name: FROM_SECRET, valueFrom: {secretKeyRef: {name: creds, key: token}}}
        - {name: EXPANDED, value: "node=$(NODE_NAME)"}
        - {name: STATE, value: /var/lib/fake/state}
        volumeMounts:
        - {name: state, mountPath: /var/lib/fake}
        - {name: run, mountPath: /var/run/fake}
        - {name: creds, mountPath: /etc/fake/creds, readOnly: true}
      volumes:
      - {name: state, hostPath: {path: /var/lib/fake, type: DirectoryOrCreate}}
      - {name: run, hostPath: {path: /var/run/fake, type: DirectoryOrCreate}}
      - {name: creds, secret: {secretName: creds}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: fake-controller, namespace: mcnet-system}
spec:
  replicas: 1
  selector: {matchLabels: {app: fake-controller}}
  template:
    metadata: {labels: {app: fake-controller}}
    spec:
      serviceAccountName: fake
      containers:
      - name: controller
        image: mcnet
        command: [/fake-component]
        args: [--listen=:8080]
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /readyz, port: http}}
---
apiVersion: v1
kind: Service
metadata: {name: fake-controller, namespace: mcnet-system}
spec:
  selector: {app: fake-controller}
  ports: [{port: 80, targetPort: http}]
`

// hungWorkload fails its liveness probe: it serves nothing on 9999.
const hungWorkload = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: fake-hung, namespace: mcnet-system}
spec:
  selector: {matchLabels: {app: fake-hung}}
  template:
    metadata: {labels: {app: fake-hung}}
    spec:
      serviceAccountName: fake
      containers:
      - name: hung
        image: mcnet
        command: [/fake-component]
        livenessProbe: {tcpSocket: {port: 9999}, periodSeconds: 1, failureThreshold: 2}
`

// TestKubeletLite runs hand-written workloads through the lab's kubelet-lite with a
// fake component, checking placement, what the process is given, its credentials'
// scope, crash restarts, relabelling and removal.
func TestKubeletLite(t *testing.T) {
	labtest.RequireRoot(t)
	ctx := t.Context()
	bin := filepath.Join(t.TempDir(), "fake-component")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "./internal/fakecomponent").CombinedOutput(); err != nil {
		t.Fatalf("build fake component: %v\n%s", err, out)
	}
	l := labtest.Start(t, lab.Options{
		Clusters: []lab.ClusterOptions{{Name: "solo", Nodes: 3}},
		Binaries: map[string]string{"fake-component": bin},
	})
	c := l.Cluster("solo")
	if err := c.ApplyYAML(ctx, []byte(fakeWorkloads)); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitWorkloads(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}

	err := lab.Eventually(ctx, 10*time.Second, func(ctx context.Context) error {
		ds, err := c.Client.AppsV1().DaemonSets("mcnet-system").Get(ctx, "fake-gateway", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if ds.Status.NumberReady != 1 || ds.Status.DesiredNumberScheduled != 1 {
			return fmt.Errorf("DaemonSet status %+v, want 1 ready of 1", ds.Status)
		}
		d, err := c.Client.AppsV1().Deployments("mcnet-system").Get(ctx, "fake-controller", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Status.ReadyReplicas != 1 {
			return fmt.Errorf("Deployment status %+v, want 1 ready", d.Status)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	gw := c.Gateways()[0]
	gwPods := c.WorkloadPods("fake-gateway")
	if len(gwPods) != 1 || gwPods[0].Node != gw {
		t.Fatalf("fake-gateway pods: got %v, want one on %s", names(gwPods), gw.Name)
	}

	t.Run("what the process is given", func(t *testing.T) {
		stateDir := filepath.Join(gw.Dir(), "hostpath", "var", "lib", "fake")
		var r struct {
			Args                         []string
			Env, Files                   map[string]string
			CanListNodes, CanListSecrets bool
			Errors                       []string
		}
		err := lab.Eventually(ctx, 20*time.Second, func(context.Context) error {
			b, err := os.ReadFile(filepath.Join(stateDir, "report.json"))
			if err != nil {
				return err
			}
			return json.Unmarshal(b, &r)
		})
		if err != nil {
			t.Fatal(err)
		}
		if want := "--report=" + filepath.Join(stateDir, "report.json"); r.Args[0] != want {
			t.Errorf("hostPath argument not rewritten: got %q, want %q", r.Args[0], want)
		}
		wantEnv := map[string]string{
			"NODE_NAME": gw.Name, "POD_NAME": "fake-gateway-" + gw.Name, "POD_NAMESPACE": "mcnet-system",
			"POD_IP": gw.IP.String(), "FROM_SECRET": "s3cret", "EXPANDED": "node=" + gw.Name,
			"STATE": filepath.Join(stateDir, "state"),
		}
		got := map[string]string{}
		for k := range wantEnv {
			got[k] = r.Env[k]
		}
		if diff := cmp.Diff(wantEnv, got); diff != "" {
			t.Errorf("environment (-want +got):\n%s", diff)
		}
		// The secret volume was read through its rewritten path and its bind mount.
		if len(r.Files) != 2 {
			t.Errorf("files read: %v, errors %v", r.Files, r.Errors)
		}
		for path, content := range r.Files {
			if content != "s3cret" {
				t.Errorf("secret volume %s: got %q (errors %v)", path, content, r.Errors)
			}
		}
		if !r.CanListNodes || r.CanListSecrets {
			t.Errorf("token scope: list nodes %v (want true), list secrets %v (want false); errors %v", r.CanListNodes, r.CanListSecrets, r.Errors)
		}
		if b, err := os.ReadFile(filepath.Join(gw.Dir(), "hostpath", "var", "run", "fake", "touched")); err != nil || string(b) != gw.Name {
			t.Errorf("hostPath write: got %q, %v", b, err)
		}
	})

	t.Run("deployment behind a service", func(t *testing.T) {
		pods := c.WorkloadPods("fake-controller")
		if len(pods) != 1 || pods[0].Node.Gateway || !pods[0].Node.PodCIDR.Contains(pods[0].IP) {
			t.Fatalf("fake-controller pods: %+v, want one on a worker with an IP of its slice", pods)
		}
		svc, err := c.Client.CoreV1().Services("mcnet-system").Get(ctx, "fake-controller", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		client, err := l.AddPod(ctx, gw, lab.PodOptions{Name: "client"})
		if err != nil {
			t.Fatal(err)
		}
		err = lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
			body, err := client.HTTPGet(ctx, "http://"+svc.Spec.ClusterIP+"/")
			if err == nil && !strings.HasPrefix(body, pods[0].Name+" ") {
				return fmt.Errorf("answer %q not from %s", body, pods[0].Name)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("kill restarts", func(t *testing.T) {
		before := c.WorkloadPods("fake-gateway")[0]
		if err := l.Kill(ctx, "fake-gateway", gw.Name); err != nil {
			t.Fatal(err)
		}
		err := lab.Eventually(ctx, 20*time.Second, func(context.Context) error {
			now := c.WorkloadPods("fake-gateway")[0]
			if now.Restarts != before.Restarts+1 || now.PIDs["gateway"] == 0 || now.PIDs["gateway"] == before.PIDs["gateway"] {
				return fmt.Errorf("restarts %d pids %v, before %d %v", now.Restarts, now.PIDs, before.Restarts, before.PIDs)
			}
			pod, err := c.Client.CoreV1().Pods("mcnet-system").Get(ctx, now.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if rc := pod.Status.ContainerStatuses[0].RestartCount; rc != int32(now.Restarts) {
				return fmt.Errorf("pod object restart count %d", rc)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("liveness probe restarts", func(t *testing.T) {
		if err := c.ApplyYAML(ctx, []byte(hungWorkload)); err != nil {
			t.Fatal(err)
		}
		err := lab.Eventually(ctx, 20*time.Second, func(context.Context) error {
			if ps := c.WorkloadPods("fake-hung"); len(ps) != 1 || ps[0].Restarts == 0 {
				return fmt.Errorf("fake-hung pods %+v, want one restarted", ps)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// Out of the way: a crash-looping pod is never reliably ready.
		if err := c.Client.AppsV1().Deployments("mcnet-system").Delete(ctx, "fake-hung", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("relabel a node", func(t *testing.T) {
		worker := c.Workers()[0]
		patch := fmt.Sprintf(`{"metadata":{"labels":{%q:"true"}}}`, lab.GatewayLabel)
		if _, err := c.Client.CoreV1().Nodes().Patch(ctx, worker.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		err := lab.Eventually(ctx, 30*time.Second, func(context.Context) error {
			if got := names(c.WorkloadPods("fake-gateway")); len(got) != 2 {
				return fmt.Errorf("fake-gateway pods %v, want 2", got)
			}
			return c.WaitWorkloads(ctx, time.Second)
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("node power off and on", func(t *testing.T) {
		podOn := func() lab.WorkloadPod {
			for _, w := range c.WorkloadPods("fake-gateway") {
				if w.Node == gw {
					return w
				}
			}
			t.Fatalf("no fake-gateway pod on %s", gw.Name)
			return lab.WorkloadPod{}
		}
		before := podOn()
		if err := gw.SetDown(ctx, true); err != nil {
			t.Fatal(err)
		}
		err := lab.Eventually(ctx, 20*time.Second, func(ctx context.Context) error {
			if w := podOn(); len(w.PIDs) > 0 || w.Ready {
				return fmt.Errorf("pod on the powered-off node: pids %v ready %v", w.PIDs, w.Ready)
			}
			node, err := c.Client.CoreV1().Nodes().Get(ctx, gw.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if st := node.Status.Conditions[0]; st.Status != "False" {
				return fmt.Errorf("node %s Ready=%s", gw.Name, st.Status)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		worker := c.Workers()[1]
		probe, err := l.AddPod(ctx, worker, lab.PodOptions{Name: "probe"})
		if err != nil {
			t.Fatal(err)
		}
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		if conn, err := probe.Dial(dctx, "tcp", gw.IP.String()+":10256"); err == nil {
			conn.Close()
			t.Errorf("reached %s's kube-proxy while it is powered off", gw.Name)
		}
		cancel()

		if err := gw.SetDown(ctx, false); err != nil {
			t.Fatal(err)
		}
		err = lab.Eventually(ctx, 30*time.Second, func(context.Context) error {
			w := podOn()
			if !w.Ready || w.PIDs["gateway"] == before.PIDs["gateway"] {
				return fmt.Errorf("pod on the powered-on node: pids %v ready %v", w.PIDs, w.Ready)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("delete removes", func(t *testing.T) {
		pid := c.WorkloadPods("fake-gateway")[0].PIDs["gateway"]
		if err := c.Client.AppsV1().DaemonSets("mcnet-system").Delete(ctx, "fake-gateway", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
			if got := names(c.WorkloadPods("fake-gateway")); len(got) != 0 {
				return fmt.Errorf("pods left: %v", got)
			}
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
				return fmt.Errorf("process %d still runs", pid)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

func names(ps []lab.WorkloadPod) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name+"@"+p.Node.Name)
	}
	return out
}
