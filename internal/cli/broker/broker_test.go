package broker_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/cli"
	"github.com/mcnet-io/mcnet/internal/fleet"
	"github.com/mcnet-io/mcnet/internal/testenv"
	"github.com/mcnet-io/mcnet/kustomize"
)

const fleetFile = "../../../kustomize/testdata/fleet.yaml"

// TestCredentialsWorkOnTheBroker mints east's credentials from a real broker with the
// plugin and uses them: east may publish its own Endpoint and nothing of west's.
func TestCredentialsWorkOnTheBroker(t *testing.T) {
	ctx := t.Context()
	cs, err := fleet.Load(fleetFile)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := kustomize.Render(cs, kustomize.Options{})
	if err != nil {
		t.Fatal(err)
	}
	repo := testenv.NewRepo(t, tree)
	cfg := testenv.StartAPIServers(t, 1)[0]
	testenv.Apply(ctx, t, cfg, repo.Build(t, kustomize.DirCRDs))
	testenv.Apply(ctx, t, cfg, repo.Build(t, kustomize.DirBroker))
	testenv.Apply(ctx, t, cfg, repo.Build(t, kustomize.DirFleet)) // the broker policies' parameter
	admin := testenv.WriteKubeconfig(t, t.TempDir(), "hub", cfg)

	run := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := cli.Run(context.Background(), genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, args)
		return code, out.String(), errOut.String()
	}
	code, out, stderr := run("broker", "credentials", "--kubeconfig", admin, "--cluster", "east", "-f", fleetFile, "--server", cfg.Host)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var secret corev1.Secret
	if err := yaml.Unmarshal([]byte(out), &secret); err != nil {
		t.Fatalf("output is not a Secret: %v\n%s", err, out)
	}
	if secret.Namespace != mcnetv1.SystemNamespace || secret.Name != "mcnet-broker-credentials" {
		t.Errorf("secret %s/%s", secret.Namespace, secret.Name)
	}
	restCfg, err := clientcmd.RESTConfigFromKubeConfig([]byte(secret.StringData["kubeconfig"]))
	if err != nil {
		t.Fatal(err)
	}
	east := testenv.Client(t, restCfg)
	ns := cs.Spec.Broker.Namespace
	ep := func(cluster string) *mcnetv1.Endpoint {
		return &mcnetv1.Endpoint{
			ObjectMeta: metav1.ObjectMeta{Name: cluster, Namespace: ns, Labels: map[string]string{mcnetv1.ClusterLabel: cluster}},
			Spec: mcnetv1.EndpointSpec{ClusterID: cluster, Hostname: "gw", Cable: mcnetv1.CableVXLAN, Port: 4789,
				PrivateIPs: []string{"198.18.0.1"}, Subnets: []string{"10.10.0.0/16"}},
		}
	}
	if err := east.Create(ctx, ep("east")); err != nil {
		t.Errorf("east publishes with its minted credentials: %v", err)
	}
	// The API server takes a moment to start enforcing newly created policies.
	testenv.Eventually(ctx, t, 10*time.Second, "east may not publish west's Endpoint", func(ctx context.Context) error {
		err := east.Create(ctx, ep("west"))
		if apierrors.IsForbidden(err) {
			return nil
		}
		if err == nil {
			_ = east.Delete(ctx, ep("west")) // the policy is not in force yet: undo and retry
		}
		return fmt.Errorf("want 403, got %v", err)
	})
	var secrets corev1.SecretList
	if err := east.List(ctx, &secrets, client.InNamespace(ns)); !apierrors.IsForbidden(err) {
		t.Errorf("east lists broker Secrets: want 403, got %v", err)
	}

	if code, _, stderr := run("broker", "credentials", "--kubeconfig", admin, "--cluster", "north", "-f", fleetFile); code != 2 || !strings.Contains(stderr, "not in fleet") {
		t.Errorf("unknown cluster: exit %d, %s", code, stderr)
	}
	if code, _, stderr := run("broker", "credentials", "--kubeconfig", admin, "--cluster", "north"); code != 2 || !strings.Contains(stderr, "no broker identity") {
		t.Errorf("cluster without identity: exit %d, %s", code, stderr)
	}
}
