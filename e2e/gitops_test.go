//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/e2e/fleetlab"
	"github.com/mcnet-io/mcnet/e2e/gitops"
	"github.com/mcnet-io/mcnet/e2e/lab"
	"github.com/mcnet-io/mcnet/e2e/lab/labtest"
	"github.com/mcnet-io/mcnet/internal/naming"
	"github.com/mcnet-io/mcnet/kustomize"
)

// Intervals the test's bootstrap Kustomization sets on what it applies (the rendered
// 10m/1m would make the test wait for minutes); users may patch theirs the same way.
const (
	gitopsKustomizationInterval = 15 * time.Second
	gitopsSourceInterval        = 5 * time.Second
	// The label Argo CD stamps on what it applies (with instanceLabelKey set to it). The
	// bootstrap Kustomization adds it to everything Flux applies so that one run checks
	// that mcnet's controllers copy neither tool's tracking metadata.
	argoInstanceLabel = "argocd.argoproj.io/instance"
)

var kustomizationGVR = schema.GroupVersionResource{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Resource: "kustomizations"}

// TestGitOpsFlux is the product's promise end to end with the real Flux: the rendered
// tree is pushed to a Git server, each cluster's own source-controller and
// kustomize-controller apply flux/<cluster> (CRDs first through dependsOn), the lab runs
// what Flux applied and traffic crosses clusters. Then the fleet changes in Git only —
// a cluster is added, a cable driver switched, an immutable field (the pinned ClusterIP
// of a cluster's DNS Service) moved — and the lab converges with no step but
// delivering the new cluster's broker credentials (out of band by design). Finally Flux
// and mcnet's controllers do not fight: three intervals later nothing was re-applied,
// and no object mcnet's controllers made carries Flux's or Argo CD's tracking metadata.
func TestGitOpsFlux(t *testing.T) {
	labtest.RequireRoot(t)
	ctx := t.Context()
	_, rel := requireFlux(t)

	// hub (broker) and east talk VXLAN; west joins later with WireGuard; then east
	// switches to WireGuard.
	full := gitopsFleet(map[string]mcnetv1.CableDriver{"hub": mcnetv1.CableVXLAN, "east": mcnetv1.CableVXLAN, "west": mcnetv1.CableWireGuard})
	opts, err := fleetlab.LabOptions(full, 2)
	if err != nil {
		t.Fatal(err)
	}
	l := labtest.Start(t, opts)
	g := startGitOps(t, l, rel)
	full.Spec.GitOps.RepoURL = g.repoURL

	initial := full.DeepCopy()
	initial.Spec.Clusters = initial.Spec.Clusters[:2]
	start := time.Now()
	rev := g.push(initial, "mcnet: hub and east")
	// Every cluster's Flux is bootstrapped up front, west's too: its path appears in Git
	// only when west joins the fleet.
	for _, c := range l.Clusters() {
		g.bootstrap(c)
	}
	g.converge(initial, rev)
	g.checkCRDsFirst(initial)
	servers, clients := serveOnWorkers(t, l)
	g.checkTraffic(initial, servers, clients)
	t.Logf("initial fleet converged in %s", time.Since(start).Round(time.Second))

	start = time.Now()
	rev = g.push(full, "mcnet: west joins the fleet")
	g.converge(full, rev)
	g.checkTraffic(full, servers, clients)
	t.Logf("added cluster converged in %s", time.Since(start).Round(time.Second))

	start = time.Now()
	switched := full.DeepCopy()
	switched.Spec.Clusters[1].Cable = mcnetv1.CableWireGuard
	rev = g.push(switched, "mcnet: east switches to WireGuard")
	g.converge(switched, rev)
	if err := lab.Eventually(ctx, 2*time.Minute, func(ctx context.Context) error {
		gw, err := activeGateway(ctx, l.Cluster("east"))
		if err != nil {
			return err
		}
		if gw.Status.Cable != mcnetv1.CableWireGuard {
			return fmt.Errorf("east's active gateway %s runs %q", gw.Name, gw.Status.Cable)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := waitConnectedAmong(ctx, g.clusters(switched), 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	g.checkTraffic(switched, servers, clients)
	t.Logf("cable switch converged in %s", time.Since(start).Round(time.Second))

	// An immutable field changes in Git: east's DNS Service moves to another pinned
	// ClusterIP. Flux recreates the Service (the rendered force annotation) instead of
	// failing every sync until someone deletes it by hand.
	start = time.Now()
	moved := switched.DeepCopy()
	rev = g.moveDNSService(moved, "east", clients["east"])
	t.Logf("DNS Service move converged in %s", time.Since(start).Round(time.Second))

	g.checkNoFight(moved, rev)
	g.checkNoTrackingCopied(moved)
}

// moveDNSService gives cluster name's mcnet-dns Service the next address of its service
// CIDR in cs, pushes and converges, and checks that the Service was recreated at the
// new address, that mcnet-dns answers there (from a pod of the cluster, with dig) and
// that the rendered CoreDNS block forwards to it.
func (g *gitopsLab) moveDNSService(cs *mcnetv1.ClusterSet, name string, from *lab.Pod) string {
	g.t.Helper()
	ctx := g.t.Context()
	var spec *mcnetv1.ClusterSpec
	for i := range cs.Spec.Clusters {
		if cs.Spec.Clusters[i].Name == name {
			spec = &cs.Spec.Clusters[i]
		}
	}
	if spec == nil || len(spec.DNSServiceIPs) != 1 {
		g.t.Fatalf("cluster %s: want one DNS Service address in the fleet, have %+v", name, spec)
	}
	c := g.lab.Cluster(name)
	before, err := c.Client.CoreV1().Services(mcnetv1.SystemNamespace).Get(ctx, mcnetv1.DNSServiceName, metav1.GetOptions{})
	if err != nil {
		g.t.Fatal(err)
	}
	if before.Spec.ClusterIP != spec.DNSServiceIPs[0] {
		g.t.Fatalf("Service %s before the move: ClusterIP %s, want the fleet's %s", mcnetv1.DNSServiceName, before.Spec.ClusterIP, spec.DNSServiceIPs[0])
	}
	next := netip.MustParseAddr(spec.DNSServiceIPs[0]).Next().String()
	spec.DNSServiceIPs = []string{next}
	rev := g.push(cs, "mcnet: "+name+"'s DNS Service moves to "+next)
	g.converge(cs, rev)
	after, err := c.Client.CoreV1().Services(mcnetv1.SystemNamespace).Get(ctx, mcnetv1.DNSServiceName, metav1.GetOptions{})
	if err != nil {
		g.t.Fatal(err)
	}
	if after.Spec.ClusterIP != next || after.UID == before.UID {
		g.t.Fatalf("Service %s after the move: ClusterIP %s (want %s), uid %s (before %s): not recreated at the new address",
			mcnetv1.DNSServiceName, after.Spec.ClusterIP, next, after.UID, before.UID)
	}
	block, err := c.Client.CoreV1().ConfigMaps("kube-system").Get(ctx, mcnetv1.CoreDNSConfigMap, metav1.GetOptions{})
	if err != nil {
		g.t.Fatal(err)
	}
	if got := strings.Join(slices.Collect(maps.Values(block.Data)), "\n"); !strings.Contains(got, "forward . "+next+"\n") {
		g.t.Errorf("the CoreDNS block does not forward to %s:\n%s", next, got)
	}
	// mcnet-dns is authoritative for the clusterset domain: a name nobody exports is
	// NXDOMAIN from it, where a dead address would time out.
	d := digger{pod: from, server: next}
	if err := lab.Eventually(ctx, time.Minute, d.expect("nothing.nowhere.svc.clusterset.local", "A")); err != nil {
		g.t.Fatal(err)
	}
	return rev
}

// requireFlux returns the repository root and the Flux controllers `make tools` built:
// without them a test skips on a developer's machine and fails in CI.
func requireFlux(t testing.TB) (string, *gitops.FluxRelease) {
	t.Helper()
	root, err := lab.RepoRoot("")
	if err != nil {
		t.Fatal(err)
	}
	rel, err := gitops.LoadFlux(t.Context(), root)
	if errors.Is(err, gitops.ErrFluxNotBuilt) && os.Getenv("CI") != "true" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return root, rel
}

// gitopsFleet is a fleet of the named clusters (hub first, the broker) with their cable
// drivers; its CIDRs match the lab's defaults.
func gitopsFleet(drivers map[string]mcnetv1.CableDriver) *mcnetv1.ClusterSet {
	cs := &mcnetv1.ClusterSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: mcnetv1.GroupVersion.String(), Kind: "ClusterSet"},
		ObjectMeta: metav1.ObjectMeta{Name: "gitops"},
	}
	for i, name := range []string{"hub", "east", "west"} {
		cs.Spec.Clusters = append(cs.Spec.Clusters, mcnetv1.ClusterSpec{
			Name:         name,
			PodCIDRs:     []string{fmt.Sprintf("10.%d.0.0/16", 10*i+10)},
			ServiceCIDRs: []string{fmt.Sprintf("10.%d.0.0/16", 10*i+11)},
			Cable:        drivers[name],
		})
	}
	cs.Spec.Broker = mcnetv1.BrokerSpec{Cluster: "hub"}
	mcnetv1.SetDefaults_ClusterSet(cs)
	return cs
}

// gitopsLab is the lab with a Git server and a Flux per cluster.
type gitopsLab struct {
	t        testing.TB
	lab      *lab.Lab
	rel      *gitops.FluxRelease
	repoURL  string
	worktree string
	flux     map[string]*gitops.Flux
	// fromGit holds "Kind namespace/name" of every object the last pushed tree holds:
	// Flux applied those, so they carry its tracking metadata by right.
	fromGit map[string]bool
}

func startGitOps(t testing.TB, l *lab.Lab, rel *gitops.FluxRelease) *gitopsLab {
	t.Helper()
	gs, err := gitops.StartGitServer(filepath.Join(t.TempDir(), "git"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gs.Close() })
	url, err := gs.CreateRepo(t.Context(), "fleet", "main")
	if err != nil {
		t.Fatal(err)
	}
	return &gitopsLab{t: t, lab: l, rel: rel, repoURL: url, worktree: filepath.Join(t.TempDir(), "fleet-repo"), flux: map[string]*gitops.Flux{}}
}

// push renders cs pointed at the lab into the working tree, commits and pushes it, and
// returns the commit.
func (g *gitopsLab) push(cs *mcnetv1.ClusterSet, message string) string {
	g.t.Helper()
	cs = fleetlab.PointAtLab(g.lab, cs)
	fleetlab.UseLabImage(g.lab, cs)
	mcnetv1.SetDefaults_ClusterSet(cs)
	if errs := mcnetv1.ValidateClusterSet(cs); len(errs) > 0 {
		g.t.Fatal(errs.ToAggregate())
	}
	tree, err := kustomize.Render(cs, kustomize.Options{Version: "lab"})
	if err != nil {
		g.t.Fatal(err)
	}
	if err := kustomize.Write(g.worktree, tree); err != nil {
		g.t.Fatal(err)
	}
	g.fromGit = map[string]bool{}
	for _, p := range tree.Paths() {
		if !strings.HasSuffix(p, ".yaml") {
			continue
		}
		d := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(tree[p]), 4096)
		for {
			var o unstructured.Unstructured
			if err := d.Decode(&o.Object); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				g.t.Fatalf("%s: %v", p, err)
			}
			if o.GetKind() != "" {
				g.fromGit[o.GetKind()+" "+o.GetNamespace()+"/"+o.GetName()] = true
			}
		}
	}
	rev, err := gitops.CommitAndPush(g.t.Context(), g.worktree, g.repoURL, "main", message)
	if err != nil {
		g.t.Fatal(err)
	}
	return rev
}

// bootstrap does for cluster c what `flux bootstrap` and `flux create kustomization
// mcnet-fleet --path=./flux/<c>` do: installs Flux's CRDs, a GitRepository flux-system
// and a Kustomization mcnet-fleet applying the cluster's flux/ directory, and starts the
// controllers.
func (g *gitopsLab) bootstrap(c *lab.Cluster) {
	g.t.Helper()
	ctx := g.t.Context()
	if err := c.ApplyYAML(ctx, g.rel.CRDs); err != nil {
		g.t.Fatal(err)
	}
	patch := fmt.Sprintf(`[{"op": "replace", "path": "/spec/interval", "value": %q},
 {"op": "add", "path": "/spec/commonMetadata", "value": {"labels": {%q: "mcnet-%s"}}}]`,
		gitopsKustomizationInterval, argoInstanceLabel, c.Name)
	bootstrap := fmt.Sprintf(`
apiVersion: v1
kind: Namespace
metadata: {name: flux-system}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: flux-system, namespace: flux-system}
spec:
  interval: %[1]s
  url: %[2]s
  ref: {branch: main}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: mcnet-fleet, namespace: flux-system}
spec:
  interval: %[3]s
  retryInterval: 5s
  path: ./flux/%[4]s
  prune: true
  sourceRef: {kind: GitRepository, name: flux-system}
  patches:
  - target: {group: kustomize.toolkit.fluxcd.io, kind: Kustomization}
    patch: '%[5]s'
  - target: {group: source.toolkit.fluxcd.io, kind: GitRepository}
    patch: '[{"op": "replace", "path": "/spec/interval", "value": "%[1]s"}]'
`, gitopsSourceInterval, g.repoURL, gitopsKustomizationInterval, c.Name, patch)
	if err := c.ApplyYAML(ctx, []byte(bootstrap)); err != nil {
		g.t.Fatal(err)
	}
	dir, err := os.MkdirTemp(g.lab.LogDir, "flux-"+c.Name+"-")
	if err != nil {
		g.t.Fatal(err)
	}
	f, err := gitops.StartFlux(g.rel, gitops.FluxOptions{Kubeconfig: c.Kubeconfig, Dir: dir, RequeueDependency: 5 * time.Second})
	if err != nil {
		g.t.Fatal(err)
	}
	g.flux[c.Name] = f
	g.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = f.Stop(ctx)
	})
}

func (g *gitopsLab) clusters(cs *mcnetv1.ClusterSet) []*lab.Cluster {
	var out []*lab.Cluster
	for _, c := range cs.Spec.Clusters {
		out = append(out, g.lab.Cluster(c.Name))
	}
	return out
}

// kustomizations are the Kustomizations cluster c runs for fleet cs.
func kustomizations(cs *mcnetv1.ClusterSet, c string) []string {
	ks := []string{"mcnet-fleet", "mcnet-crds", "mcnet"}
	if c == cs.Spec.Broker.Cluster {
		ks = append(ks, "mcnet-broker")
	}
	return ks
}

// converge waits until every cluster of cs applied revision rev, its components run and
// every gateway is connected to every other cluster. It delivers broker credentials to
// clusters that have none, as `kubectl mcnet broker credentials` would, once the broker
// holds the cluster's identity.
func (g *gitopsLab) converge(cs *mcnetv1.ClusterSet, rev string) {
	g.t.Helper()
	ctx := g.t.Context()
	broker := g.lab.Cluster(cs.Spec.Broker.Cluster)
	for _, c := range g.clusters(cs) {
		_, err := c.Client.CoreV1().Secrets(mcnetv1.SystemNamespace).Get(ctx, naming.BrokerCredentialsSecret, metav1.GetOptions{})
		if err == nil {
			continue
		}
		if err := lab.Eventually(ctx, 3*time.Minute, func(ctx context.Context) error {
			if err := g.fluxAlive(); err != nil {
				return lab.Permanent(err)
			}
			return fleetlab.DeliverBrokerCredentials(ctx, broker, c, cs.Spec.Broker.Namespace)
		}); err != nil {
			g.t.Fatalf("broker credentials for %s (Flux applies the broker identity and mcnet-system): %v\n%s", c.Name, err, g.kustomizationStatus(cs))
		}
	}
	if err := lab.Eventually(ctx, 5*time.Minute, func(ctx context.Context) error {
		if err := g.fluxAlive(); err != nil {
			return lab.Permanent(err)
		}
		var errs []error
		for _, c := range g.clusters(cs) {
			for _, k := range kustomizations(cs, c.Name) {
				errs = append(errs, kustomizationReady(ctx, c, k, rev))
			}
		}
		return errors.Join(errs...)
	}); err != nil {
		g.t.Fatalf("Flux did not apply %s: %v", rev, err)
	}
	for _, c := range g.clusters(cs) {
		if err := c.WaitWorkloads(ctx, 2*time.Minute); err != nil {
			g.t.Fatalf("components of %s: %v", c.Name, err)
		}
	}
	if err := waitConnectedAmong(ctx, g.clusters(cs), 2*time.Minute); err != nil {
		g.t.Fatal(err)
	}
}

func (g *gitopsLab) fluxAlive() error {
	var errs []error
	for name, f := range g.flux {
		if err := f.Exited(); err != nil {
			errs = append(errs, fmt.Errorf("cluster %s: %w (logs in %s)", name, err, filepath.Dir(f.KustomizeLog)))
		}
	}
	return errors.Join(errs...)
}

func getKustomization(ctx context.Context, c *lab.Cluster, name string) (*unstructured.Unstructured, error) {
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return nil, err
	}
	return dyn.Resource(kustomizationGVR).Namespace("flux-system").Get(ctx, name, metav1.GetOptions{})
}

// readyCondition returns a Flux object's Ready condition.
func readyCondition(u *unstructured.Unstructured) (status, message, since string) {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Ready" {
			return fmt.Sprint(m["status"]), fmt.Sprint(m["message"]), fmt.Sprint(m["lastTransitionTime"])
		}
	}
	return "Unknown", "no Ready condition", ""
}

// kustomizationReady checks that a Kustomization is Ready, observed its latest spec and
// applied commit rev.
func kustomizationReady(ctx context.Context, c *lab.Cluster, name, rev string) error {
	k, err := getKustomization(ctx, c, name)
	if err != nil {
		return fmt.Errorf("%s: %w", c.Name, err)
	}
	applied, _, _ := unstructured.NestedString(k.Object, "status", "lastAppliedRevision")
	observed, _, _ := unstructured.NestedInt64(k.Object, "status", "observedGeneration")
	status, msg, _ := readyCondition(k)
	switch {
	case status != "True":
		return fmt.Errorf("%s/%s not Ready: %s", c.Name, name, msg)
	case observed != k.GetGeneration():
		return fmt.Errorf("%s/%s: generation %d not observed yet", c.Name, name, k.GetGeneration())
	case applied != "main@sha1:"+rev:
		return fmt.Errorf("%s/%s applied %q, want main@sha1:%s", c.Name, name, applied, rev)
	}
	return nil
}

func (g *gitopsLab) kustomizationStatus(cs *mcnetv1.ClusterSet) string {
	var b strings.Builder
	for _, c := range g.clusters(cs) {
		for _, k := range kustomizations(cs, c.Name) {
			u, err := getKustomization(context.Background(), c, k)
			if err != nil {
				fmt.Fprintf(&b, "%s/%s: %v\n", c.Name, k, err)
				continue
			}
			status, msg, _ := readyCondition(u)
			fmt.Fprintf(&b, "%s/%s: Ready=%s %s\n", c.Name, k, status, msg)
		}
	}
	return b.String()
}

// fluxLogEntry is one line of kustomize-controller's JSON log.
type fluxLogEntry struct {
	Msg           string            `json:"msg"`
	Output        map[string]string `json:"output"`
	Revision      string            `json:"revision"`
	Kustomization struct {
		Name string `json:"name"`
	} `json:"Kustomization"`
	// cluster is whose log the entry came from (set by the reader).
	cluster string
}

// fluxLog reads a kustomize-controller log from byte offset from on.
func fluxLog(t testing.TB, path string, from int64) (entries []fluxLogEntry, end int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(from, 0); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	end = from
	for sc.Scan() {
		end += int64(len(sc.Bytes())) + 1
		var e fluxLogEntry
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Kustomization.Name != "" {
			entries = append(entries, e)
		}
	}
	return entries, end
}

// checkCRDsFirst checks in each cluster's kustomize-controller log that mcnet-crds
// applied the CRDs before mcnet applied anything (dependsOn held it back).
func (g *gitopsLab) checkCRDsFirst(cs *mcnetv1.ClusterSet) {
	g.t.Helper()
	for _, c := range g.clusters(cs) {
		entries, _ := fluxLog(g.t, g.flux[c.Name].KustomizeLog, 0)
		crds, mcnet := -1, -1
		for i, e := range entries {
			if e.Msg != "server-side apply completed" {
				continue
			}
			switch {
			case e.Kustomization.Name == "mcnet-crds" && crds < 0:
				crds = i
				if e.Output["CustomResourceDefinition/gateways.mcnet.io"] != "created" {
					g.t.Errorf("%s: mcnet-crds' first apply did not create the Gateway CRD: %v", c.Name, e.Output)
				}
			case e.Kustomization.Name == "mcnet" && mcnet < 0:
				mcnet = i
			}
		}
		if crds < 0 || mcnet < 0 || crds > mcnet {
			g.t.Errorf("%s: kustomize-controller applied mcnet-crds at log entry %d and mcnet at %d; want CRDs first", c.Name, crds, mcnet)
		}
	}
}

// checkTraffic checks TCP between every pair of the fleet's clusters.
func (g *gitopsLab) checkTraffic(cs *mcnetv1.ClusterSet, servers, clients map[string]*lab.Pod) {
	g.t.Helper()
	for _, src := range cs.Spec.Clusters {
		for _, dst := range cs.Spec.Clusters {
			if src.Name == dst.Name {
				continue
			}
			srv, cli := servers[dst.Name], clients[src.Name]
			url := "http://" + net.JoinHostPort(srv.IP.String(), "8080") + "/"
			if err := lab.Eventually(g.t.Context(), time.Minute, func(ctx context.Context) error { return get(ctx, cli, srv, url) }); err != nil {
				g.t.Errorf("%s -> %s: %v", src.Name, dst.Name, err)
			}
		}
	}
	if g.t.Failed() {
		g.t.FailNow()
	}
}

// checkNoFight watches at least three Kustomization intervals after convergence, and
// on until each Kustomization reconciled three times (a loaded machine runs Flux
// slower than its intervals; 3 min at most): every apply finds everything unchanged (no
// drift between Flux and mcnet's controllers), none turns not-Ready and none applies
// another revision.
func (g *gitopsLab) checkNoFight(cs *mcnetv1.ClusterSet, rev string) {
	g.t.Helper()
	ctx := g.t.Context()
	offsets := map[string]int64{}
	for _, c := range g.clusters(cs) {
		_, offsets[c.Name] = fluxLog(g.t, g.flux[c.Name].KustomizeLog, 0)
	}
	// runs counts each cluster's finished reconciles per Kustomization since the start.
	runs := func() (map[string]map[string]int, []fluxLogEntry) {
		out := map[string]map[string]int{}
		var all []fluxLogEntry
		for _, c := range g.clusters(cs) {
			entries, _ := fluxLog(g.t, g.flux[c.Name].KustomizeLog, offsets[c.Name])
			out[c.Name] = map[string]int{}
			for _, e := range entries {
				if strings.HasPrefix(e.Msg, "Reconciliation finished") {
					out[c.Name][e.Kustomization.Name]++
				}
				e.cluster = c.Name
				all = append(all, e)
			}
		}
		return out, all
	}
	// short names the Kustomizations that reconciled fewer than three times in r.
	short := func(r map[string]map[string]int) []string {
		var out []string
		for _, c := range g.clusters(cs) {
			for _, k := range kustomizations(cs, c.Name) {
				if r[c.Name][k] < 3 {
					out = append(out, fmt.Sprintf("%s/%s reconciled %d times", c.Name, k, r[c.Name][k]))
				}
			}
		}
		return out
	}
	// Flux marks Ready Unknown while it reconciles, so sample through the window: never
	// False, never another revision.
	start := time.Now()
	least, most := 3*gitopsKustomizationInterval+10*time.Second, 3*time.Minute
	for {
		for _, c := range g.clusters(cs) {
			for _, k := range kustomizations(cs, c.Name) {
				u, err := getKustomization(ctx, c, k)
				if err != nil {
					g.t.Fatal(err)
				}
				applied, _, _ := unstructured.NestedString(u.Object, "status", "lastAppliedRevision")
				// A dependent reconciling while its dependency reconciles is
				// refused with "dependency ... is not ready" and retried: Flux's
				// ordering, not a fight between Flux and mcnet, so it may pass.
				status, msg, _ := readyCondition(u)
				dependencyWait := strings.HasPrefix(msg, "dependency '") && strings.HasSuffix(msg, "' is not ready")
				if (status == "False" && !dependencyWait) || applied != "main@sha1:"+rev {
					g.t.Fatalf("%s/%s after convergence: Ready=%s %s, applied %s", c.Name, k, status, msg, applied)
				}
			}
		}
		if waited := time.Since(start); waited >= most {
			break
		} else if waited >= least {
			if r, _ := runs(); len(short(r)) == 0 {
				break
			}
		}
		select {
		case <-ctx.Done():
			g.t.Fatal(ctx.Err())
		case <-time.After(time.Second):
		}
	}
	window := time.Since(start).Round(time.Second)
	counts, entries := runs()
	for _, e := range entries {
		if e.Msg == "server-side apply completed" {
			for obj, action := range e.Output {
				if action != "unchanged" {
					g.t.Errorf("%s: %s re-applied %s (%s) at %s after convergence", e.cluster, e.Kustomization.Name, obj, action, e.Revision)
				}
			}
		}
	}
	for _, m := range short(counts) {
		g.t.Errorf("%s in %s, want at least 3", m, window)
	}
	for _, c := range g.clusters(cs) {
		for _, k := range kustomizations(cs, c.Name) {
			if err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error { return kustomizationReady(ctx, c, k, rev) }); err != nil {
				g.t.Error(err)
			}
		}
		g.t.Logf("%s: reconciles in %s with nothing re-applied: %v", c.Name, window, counts[c.Name])
	}
}

// trackingKey reports whether a label or annotation key belongs to Flux's or Argo CD's
// tracking.
func trackingKey(k string) bool {
	return strings.HasPrefix(k, "kustomize.toolkit.fluxcd.io/") || strings.HasPrefix(k, "argocd.argoproj.io/")
}

// checkNoTrackingCopied lists every mcnet.io and Multi-Cluster Services object in every
// cluster (the broker's copies and each cluster's mirrors among them): none may carry
// Flux's or Argo CD's tracking labels or annotations, which only objects Flux applied
// have. Otherwise Flux or Argo CD would count them as theirs and prune or fight them.
func (g *gitopsLab) checkNoTrackingCopied(cs *mcnetv1.ClusterSet) {
	g.t.Helper()
	ctx := g.t.Context()
	// The check would be vacuous if Flux applied nothing with those labels.
	for _, c := range g.clusters(cs) {
		d, err := c.Client.AppsV1().Deployments(mcnetv1.SystemNamespace).Get(ctx, "mcnet-controller", metav1.GetOptions{})
		if err != nil {
			g.t.Fatal(err)
		}
		if d.Labels["kustomize.toolkit.fluxcd.io/name"] != "mcnet" || d.Labels[argoInstanceLabel] == "" {
			g.t.Fatalf("%s: Flux did not label the controller Deployment it applied: %v", c.Name, d.Labels)
		}
	}
	brokerClusters := 0
	for _, c := range g.clusters(cs) {
		dc, err := discovery.NewDiscoveryClientForConfig(c.Config)
		if err != nil {
			g.t.Fatal(err)
		}
		dyn, err := dynamic.NewForConfig(c.Config)
		if err != nil {
			g.t.Fatal(err)
		}
		lists, err := dc.ServerPreferredResources()
		if err != nil {
			g.t.Fatal(err)
		}
		n := 0
		for _, l := range lists {
			gv, _ := schema.ParseGroupVersion(l.GroupVersion)
			if gv.Group != mcnetv1.GroupVersion.Group && gv.Group != "multicluster.x-k8s.io" {
				continue
			}
			for _, r := range l.APIResources {
				if strings.Contains(r.Name, "/") {
					continue
				}
				items, err := dyn.Resource(gv.WithResource(r.Name)).List(ctx, metav1.ListOptions{})
				if err != nil {
					g.t.Fatal(err)
				}
				for _, o := range items.Items {
					if r.Kind == "Cluster" && o.GetNamespace() == cs.Spec.Broker.Namespace {
						brokerClusters++
					}
					if g.fromGit[r.Kind+" "+o.GetNamespace()+"/"+o.GetName()] {
						continue
					}
					n++
					for _, m := range []map[string]string{o.GetLabels(), o.GetAnnotations()} {
						for k := range m {
							if trackingKey(k) {
								g.t.Errorf("%s: %s %s/%s carries %s: a GitOps tool's tracking metadata copied by mcnet", c.Name, r.Kind, o.GetNamespace(), o.GetName(), k)
							}
						}
					}
				}
			}
		}
		g.t.Logf("%s: %d mcnet.io and MCS objects checked for tracking metadata", c.Name, n)
	}
	if brokerClusters != len(cs.Spec.Clusters) {
		g.t.Errorf("broker holds %d Cluster objects, want %d", brokerClusters, len(cs.Spec.Clusters))
	}
}

// waitConnectedAmong waits until each of the clusters' active gateway reports a
// connected connection to every other one of them.
func waitConnectedAmong(ctx context.Context, clusters []*lab.Cluster, timeout time.Duration) error {
	return lab.Eventually(ctx, timeout, func(ctx context.Context) error {
		var errs []error
		for _, c := range clusters {
			gw, err := activeGateway(ctx, c)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			for _, o := range clusters {
				if o == c {
					continue
				}
				ok := false
				for _, conn := range gw.Status.Connections {
					if conn.Cluster == o.Name {
						ok = true
						if conn.Status != mcnetv1.Connected {
							errs = append(errs, fmt.Errorf("%s: connection to %s is %s: %s", gw.Name, o.Name, conn.Status, conn.Message))
						}
					}
				}
				if !ok {
					errs = append(errs, fmt.Errorf("%s: no connection to %s", gw.Name, o.Name))
				}
			}
		}
		return errors.Join(errs...)
	})
}
