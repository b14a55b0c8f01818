//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/controllers/gateway"
	"github.com/mcnet-io/mcnet/e2e/lab"
)

// checkBadGatewayRollout rolls a gateway version out in c that never becomes ready (its
// process refuses a flag and exits, as a build that cannot start would), and checks the
// rendered update strategy holds it at the first gateway node: for longer than
// minReadySeconds and a few probe periods, one pod runs the new template, every other
// gateway node keeps the old one, ready, and traffic crosses every pair. Then it rolls
// back to the old template and waits until the cluster's workloads are all updated and
// ready and its gateways connected again.
func checkBadGatewayRollout(t *testing.T, l *connectedLab, servers, clients map[string]*lab.Pod, c *lab.Cluster) {
	t.Helper()
	ctx := t.Context()
	dss := c.Client.AppsV1().DaemonSets(mcnetv1.SystemNamespace)
	ds, err := dss.Get(ctx, gateway.DaemonSetName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	desired := ds.Status.DesiredNumberScheduled
	if desired < 2 || ds.Spec.MinReadySeconds == 0 {
		t.Fatalf("%s: gateway DaemonSet on %d nodes with minReadySeconds %d: the check needs two nodes and the rendered strategy", c.Name, desired, ds.Spec.MinReadySeconds)
	}
	oldArgs := ds.Spec.Template.Spec.Containers[0].Args
	patch := func(args []string) {
		t.Helper()
		b, err := json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
			"containers": []map[string]any{{"name": ds.Spec.Template.Spec.Containers[0].Name, "args": args}}}}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dss.Patch(ctx, gateway.DaemonSetName, types.StrategicMergePatchType, b, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// Restore the old template even when a check below fails, so later checks of the
	// lab start from a working gateway.
	restored := false
	restore := func() {
		if restored {
			return
		}
		restored = true
		patch(oldArgs)
		if err := c.WaitWorkloads(ctx, 3*time.Minute); err != nil {
			t.Fatalf("%s: rolling back the bad gateway version: %v", c.Name, err)
		}
		if err := l.waitConnected(ctx, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	defer restore()
	// --lease-duration must be whole seconds: the process exits 1 before it starts.
	patch(append(append([]string{}, oldArgs...), "--lease-duration=1500ms"))

	// Hold for minReadySeconds plus several probe periods, and a crash-loop back-off.
	hold := time.Duration(ds.Spec.MinReadySeconds)*time.Second + 25*time.Second
	deadline := time.Now().Add(hold)
	for time.Now().Before(deadline) {
		cur, err := dss.Get(ctx, gateway.DaemonSetName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// The counts speak of the new template only once the controller saw it.
		if cur.Status.ObservedGeneration >= cur.Generation && cur.Status.UpdatedNumberScheduled > 1 {
			t.Fatalf("%s: the bad gateway version reached %d of %d nodes: the rollout did not stop at the first", c.Name, cur.Status.UpdatedNumberScheduled, desired)
		}
		time.Sleep(time.Second)
	}
	// The DaemonSet's status is the controller's last write, which a loaded API server
	// can leave a few seconds behind the pods: wait for it to say what the pods do.
	var cur *appsv1.DaemonSet
	if err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
		var err error
		if cur, err = dss.Get(ctx, gateway.DaemonSetName, metav1.GetOptions{}); err != nil {
			return err
		}
		if st := cur.Status; st.ObservedGeneration < cur.Generation || st.UpdatedNumberScheduled != 1 || st.NumberAvailable != desired-1 {
			return fmt.Errorf("generation %d observed %d, %d updated, %d available of %d", cur.Generation, st.ObservedGeneration, st.UpdatedNumberScheduled, st.NumberAvailable, desired)
		}
		return nil
	}); err != nil {
		t.Errorf("%s after %s of a bad gateway version: %v; want 1 updated (not ready) and the rest available", c.Name, hold, err)
	}
	// The old version on the other node carries the cluster: every pair still connects.
	checkAllPairs(t, l.Lab, servers, clients, time.Minute)
	start := time.Now()
	restore()
	t.Logf("%s: a gateway version that never became ready held at %d of %d nodes for %s (%d available); rolled back in %s",
		c.Name, cur.Status.UpdatedNumberScheduled, desired, hold, cur.Status.NumberAvailable, time.Since(start).Round(time.Second))
}
