//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/util/retry"

	"github.com/mcnet-io/mcnet/e2e/lab"
	"github.com/mcnet-io/mcnet/internal/cli"
)

// mcnet runs the plugin in-process with a kubeconfig listing every lab cluster.
func mcnet(t *testing.T, kubeconfig string, args ...string) (int, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := cli.Run(t.Context(), genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, append(args, "--kubeconfig", kubeconfig))
	t.Logf("kubectl mcnet %s → %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
	return code, out.String()
}

// codes runs diagnose -o json and returns the finding codes.
func codes(t *testing.T, kubeconfig string, extra ...string) map[string]bool {
	t.Helper()
	_, out := mcnet(t, kubeconfig, append([]string{"diagnose", "-o", "json"}, extra...)...)
	var rep struct{ Checks []struct{ Code string } }
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("diagnose -o json: %v", err)
	}
	got := map[string]bool{}
	for _, c := range rep.Checks {
		if c.Code != "" {
			got[c.Code] = true
		}
	}
	return got
}

func netns(ctx context.Context, t *testing.T, ns string, args ...string) {
	t.Helper()
	if out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("ip netns exec %s %v: %v\n%s", ns, args, err, out)
	}
}

// TestOperate runs show, diagnose and benchmark against the lab and injects the faults
// diagnose must name: a blocked cable port, a shrunk WAN MTU, a stopped broker, a
// deleted gateway label, overlapping CIDRs in a fleet file and a live edit (drift).
func TestOperate(t *testing.T) {
	ctx := t.Context()
	l, cs, repoDir := startExampleFleet(t)
	// One kubeconfig with every cluster's context.
	var paths []string
	for _, c := range l.Clusters() {
		paths = append(paths, c.Kubeconfig)
	}
	t.Setenv("KUBECONFIG", strings.Join(paths, string(os.PathListSeparator)))
	merged := filepath.Join(t.TempDir(), "kubeconfig")
	if out, err := exec.CommandContext(ctx, "kubectl", "config", "view", "--flatten").Output(); err == nil {
		_ = os.WriteFile(merged, out, 0o600)
	} else {
		merged = strings.Join(paths, string(os.PathListSeparator))
	}

	if err := lab.Eventually(ctx, 2*time.Minute, func(context.Context) error {
		if code, _ := mcnet(t, merged, "diagnose", "--probe=false"); code != 0 {
			return errFindings
		}
		return nil
	}); err != nil {
		t.Fatalf("healthy lab: diagnose never passed: %v", err)
	}
	if code, _ := mcnet(t, merged, "show", "all"); code != 0 {
		t.Errorf("show all: exit %d", code)
	}
	code, out := mcnet(t, merged, "benchmark", "throughput", "--mode", "gateway", "-o", "json", "--duration", "3s")
	if code != 0 || !strings.Contains(out, `"gbps"`) {
		t.Errorf("benchmark throughput: exit %d", code)
	}
	if code, _ := mcnet(t, merged, "benchmark", "latency", "--mode", "both"); code != 0 {
		t.Errorf("benchmark latency: exit %d", code)
	}

	t.Run("benchmark agrees with iperf3", func(t *testing.T) {
		benchmarkVsIperf3(t, l, merged)
	})

	t.Run("healthy tunnels pass the probes", func(t *testing.T) {
		// Path MTU through each tunnel measured by the gateways: no connection finding
		// (MCN14xx) on a healthy lab, so the faults below are named for their cause.
		var got map[string]bool
		err := lab.Eventually(ctx, time.Minute, func(context.Context) error {
			got = codes(t, merged)
			for c := range got {
				if strings.HasPrefix(c, "MCN14") {
					return errFindings
				}
			}
			return nil
		})
		if err != nil {
			t.Errorf("healthy lab: diagnose reports connection findings %v", got)
		}
	})

	a := l.Clusters()[0]
	gw := a.Gateways()[0]
	port := "4789"
	if cs.Spec.Cable != "vxlan" {
		port = "51820"
	}
	t.Run("cable port blocked", func(t *testing.T) {
		// The WAN namespace is a bridge (bridge-nf-call-iptables=0), so iptables there
		// never sees gateway traffic: filter in the bridge family instead.
		netns(ctx, t, l.WANNetns, "nft", "add table bridge mcnet-e2e")
		defer netns(context.WithoutCancel(ctx), t, l.WANNetns, "nft", "delete table bridge mcnet-e2e")
		netns(ctx, t, l.WANNetns, "nft", "add chain bridge mcnet-e2e forward { type filter hook forward priority 0 ; }")
		netns(ctx, t, l.WANNetns, "nft", "add rule bridge mcnet-e2e forward udp dport "+port+" drop")
		eventuallyCodes(t, merged, "MCN1401", "MCN1405")
	})
	t.Run("WAN MTU shrunk", func(t *testing.T) {
		netns(ctx, t, gw.Netns, "ip", "link", "set", "wan0", "mtu", "1280")
		defer netns(context.WithoutCancel(ctx), t, gw.Netns, "ip", "link", "set", "wan0", "mtu", "1500")
		eventuallyCodes(t, merged, "MCN1406")
	})
	t.Run("gateway label deleted", func(t *testing.T) {
		patch := []byte(`{"metadata":{"labels":{"node-restriction.kubernetes.io/mcnet-gateway":null}}}`)
		for _, n := range a.Gateways() {
			if _, err := a.Client.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		defer func() {
			for _, n := range a.Gateways() {
				_, _ = a.Client.CoreV1().Nodes().Patch(context.WithoutCancel(ctx), n.Name, types.MergePatchType, []byte(`{"metadata":{"labels":{"node-restriction.kubernetes.io/mcnet-gateway":"true"}}}`), metav1.PatchOptions{})
			}
		}()
		eventuallyCodes(t, merged, "MCN1301")
	})
	t.Run("drift", func(t *testing.T) {
		dss := a.Client.AppsV1().DaemonSets("mcnet-system")
		orig, err := dss.Get(ctx, "mcnet-gateway", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		patch := []byte(`{"spec":{"template":{"spec":{"containers":[{"name":"gateway","args":["--config=/etc/mcnet/config.yaml","--probe-interval=9s"]}]}}}}`)
		if _, err := dss.Patch(ctx, "mcnet-gateway", types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		// Put the rendered spec back, as Flux or Argo CD would, so later faults start
		// from a healthy fleet.
		defer func() {
			ctx := context.WithoutCancel(ctx)
			if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
				cur, err := dss.Get(ctx, "mcnet-gateway", metav1.GetOptions{})
				if err != nil {
					return err
				}
				cur.Spec.Template = orig.Spec.Template
				_, err = dss.Update(ctx, cur, metav1.UpdateOptions{})
				return err
			}); err != nil {
				t.Errorf("restore DaemonSet mcnet-gateway: %v", err)
			}
		}()
		if got := codes(t, merged, "--probe=false", "--repo", repoDir); !got["MCN1804"] {
			t.Errorf("drift not reported as MCN1804: %v", got)
		}
	})
	t.Run("overlapping CIDRs offline", func(t *testing.T) {
		root, err := lab.RepoRoot("")
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(root, "examples", "fleet.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		bad := strings.Replace(string(data), cs.Spec.Clusters[1].PodCIDRs[0], cs.Spec.Clusters[0].PodCIDRs[0], 1)
		p := filepath.Join(t.TempDir(), "fleet.yaml")
		if err := os.WriteFile(p, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := codes(t, merged, "--offline", "-f", p); !got["MCN1201"] {
			t.Errorf("overlap not reported as MCN1201: %v", got)
		}
	})
	t.Run("broker stopped", func(t *testing.T) {
		// The broker's API port refuses connections from the WAN (every other cluster),
		// while the host still reaches it through the lab's proxy and its own cluster
		// through the LAN: only the clusters' own view can show it.
		broker := l.Cluster(cs.Spec.Broker.Cluster)
		rule := []string{"INPUT", "-i", "uplink", "-p", "tcp", "--dport", strconv.Itoa(int(broker.PublicAPIServer.Port())), "-j", "REJECT", "--reject-with", "tcp-reset"}
		netns(ctx, t, broker.Netns, append([]string{"iptables", "-I"}, rule...)...)
		defer netns(context.WithoutCancel(ctx), t, broker.Netns, append([]string{"iptables", "-D"}, rule...)...)
		eventuallyCodes(t, merged, "MCN1103")
	})
}

// benchmarkVsIperf3 measures worker to worker throughput between two clusters with
// kubectl mcnet benchmark (the route agents on the workers) and with iperf3 between
// pods on the same workers, and wants the two within 20%. CPU is shared in the lab, so
// a pair of measurements that disagrees is taken again, up to three times.
func benchmarkVsIperf3(t *testing.T, l *lab.Lab, kubeconfig string) {
	ctx := t.Context()
	from, to := l.Clusters()[0], l.Clusters()[len(l.Clusters())-1]
	cli, err := l.AddPod(ctx, from.Workers()[0], lab.PodOptions{Name: "iperf-client"})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := l.AddPod(ctx, to.Workers()[0], lab.PodOptions{Name: "iperf-server"})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.StartIperf3(ctx, 5201); err != nil {
		t.Fatal(err)
	}
	var tries []string
	for range 3 {
		out, err := cli.Exec(ctx, "iperf3", "-c", srv.IP.String(), "-p", "5201", "-t", "3", "-J")
		if err != nil {
			t.Fatalf("iperf3 %s -> %s: %v\n%s", cli, srv, err, out)
		}
		bps, err := iperfReceived(out)
		if err != nil || bps <= 0 {
			t.Fatalf("iperf3 output (%v):\n%s", err, out)
		}
		code, bout := mcnet(t, kubeconfig, "benchmark", "throughput", "--mode", "worker", "--from", from.Name, "--to", to.Name, "-o", "json", "--duration", "3s")
		var rep struct {
			Results []struct {
				Gbps float64 `json:"gbps"`
			} `json:"results"`
		}
		if err := json.Unmarshal([]byte(bout), &rep); code != 0 || err != nil || len(rep.Results) != 1 {
			t.Fatalf("benchmark throughput %s -> %s: exit %d, %d results, %v", from.Name, to.Name, code, len(rep.Results), err)
		}
		ref, got := bps/1e9, rep.Results[0].Gbps
		tries = append(tries, fmt.Sprintf("benchmark %.2f Gbit/s vs iperf3 %.2f Gbit/s", got, ref))
		if got >= 0.8*ref && got <= 1.2*ref {
			t.Logf("%s -> %s worker to worker: %s", from.Name, to.Name, tries[len(tries)-1])
			return
		}
	}
	t.Errorf("%s -> %s worker to worker: benchmark not within 20%% of iperf3: %s", from.Name, to.Name, strings.Join(tries, "; "))
}

var errFindings = &findingsError{}

type findingsError struct{}

func (*findingsError) Error() string { return "diagnose reported findings" }

func eventuallyCodes(t *testing.T, kubeconfig string, want ...string) {
	t.Helper()
	var got map[string]bool
	err := lab.Eventually(t.Context(), 90*time.Second, func(context.Context) error {
		got = codes(t, kubeconfig)
		for _, w := range want {
			if !got[w] {
				return errFindings
			}
		}
		return nil
	})
	if err != nil {
		t.Errorf("diagnose never reported %v (last: %v)", want, got)
	}
}
