// Package fleetlab installs a fleet into a lab the way a user would: render it with
// the real render engine, point it at the lab's API servers, apply the tree (CRDs
// first) to each cluster and the broker, and deliver each cluster's broker credentials
// out of band, as `kubectl mcnet broker credentials` would.
package fleetlab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/e2e/lab"
	"github.com/mcnet-io/mcnet/internal/naming"
	"github.com/mcnet-io/mcnet/kustomize"
)

// LabOptions derives lab clusters from a fleet: one per fleet cluster, with its first
// IPv4 pod and service CIDRs, nodes nodes each (0: the lab's default), and the named
// clusters' gateways behind NAT.
func LabOptions(cs *mcnetv1.ClusterSet, nodes int, behindNAT ...string) (lab.Options, error) {
	nat := map[string]bool{}
	for _, n := range behindNAT {
		nat[n] = true
	}
	var opts lab.Options
	var errs []error
	for _, c := range cs.Spec.Clusters {
		pod, perr := firstIPv4(c.PodCIDRs)
		svc, serr := firstIPv4(c.ServiceCIDRs)
		if err := errors.Join(perr, serr); err != nil {
			errs = append(errs, fmt.Errorf("cluster %s: %w", c.Name, err))
			continue
		}
		// The API server serves every service CIDR, so the rendered Services (mcnet-dns
		// pinned in each family) apply as they would in the real cluster.
		var svc6 string
		for _, s := range c.ServiceCIDRs {
			if p, err := netip.ParsePrefix(s); err == nil && p.Addr().Is6() {
				svc6 = p.String()
			}
		}
		opts.Clusters = append(opts.Clusters, lab.ClusterOptions{Name: c.Name, PodCIDR: pod, ServiceCIDR: svc, ServiceCIDRv6: svc6, Nodes: nodes, BehindNAT: nat[c.Name]})
		delete(nat, c.Name)
	}
	for n := range nat {
		errs = append(errs, fmt.Errorf("--nat %s: no such cluster in the fleet", n))
	}
	return opts, errors.Join(errs...)
}

func firstIPv4(cidrs []string) (string, error) {
	for _, s := range cidrs {
		if p, err := netip.ParsePrefix(s); err == nil && p.Addr().Is4() {
			return p.String(), nil
		}
	}
	return "", fmt.Errorf("no IPv4 CIDR in %v (the lab is IPv4 only)", cidrs)
}

// Install points the fleet at the lab's API servers, renders it into dir and applies
// it. It does not wait for the components to run; see lab.Cluster.WaitWorkloads. A
// tree already in dir is the previous render: its Fleet table's global ranges are kept,
// as `kubectl mcnet render --out` keeps them.
func Install(ctx context.Context, l *lab.Lab, cs *mcnetv1.ClusterSet, dir string) error {
	cs = cs.DeepCopy()
	mcnetv1.SetDefaults_ClusterSet(cs)
	broker := l.Cluster(cs.Spec.Broker.Cluster)
	if broker == nil {
		return fmt.Errorf("broker cluster %q is not in the lab", cs.Spec.Broker.Cluster)
	}
	kept, err := kustomize.ReadKept(dir, cs.Name)
	if err != nil {
		return err
	}
	if err := Render(l, cs, dir, kept); err != nil {
		return err
	}

	// The order Flux's dependsOn and Argo CD's sync waves give: CRDs, the broker, then
	// each cluster's components.
	for _, c := range l.Clusters() {
		if err := c.ApplyKustomization(ctx, filepath.Join(dir, kustomize.DirCRDs)); err != nil {
			return err
		}
	}
	if err := broker.ApplyKustomization(ctx, filepath.Join(dir, kustomize.DirBroker)); err != nil {
		return err
	}
	for _, c := range l.Clusters() {
		if err := c.ApplyKustomization(ctx, filepath.Join(dir, kustomize.DirClusters, c.Name)); err != nil {
			return err
		}
		if err := DeliverBrokerCredentials(ctx, broker, c, cs.Spec.Broker.Namespace); err != nil {
			return err
		}
	}
	// The clusters' own DNS, importing the clusterset server block the overlays carry.
	for _, c := range l.Clusters() {
		if err := c.StartClusterDNS(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Render points the fleet at the lab's API servers and the lab's image and renders it
// into dir, keeping the global ranges of kept (the Fleet table of the previous render,
// kustomize.ReadKept; nil for a first render), as `kubectl mcnet render` does.
func Render(l *lab.Lab, cs *mcnetv1.ClusterSet, dir string, kept *mcnetv1.Fleet) error {
	if l.Cluster(cs.Spec.Broker.Cluster) == nil {
		return fmt.Errorf("broker cluster %q is not in the lab", cs.Spec.Broker.Cluster)
	}
	cs = PointAtLab(l, cs)
	UseLabImage(l, cs)
	mcnetv1.SetDefaults_ClusterSet(cs)
	if errs := mcnetv1.ValidateClusterSet(cs); len(errs) > 0 {
		return fmt.Errorf("fleet for the lab: %w", errs.ToAggregate())
	}
	tree, err := kustomize.Render(cs, kustomize.Options{Version: "lab", Kept: kept})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return kustomize.Write(dir, tree)
}

// PointAtLab is a copy of cs whose broker and clusters name the lab's API servers
// (clusters not in the lab keep theirs); its broker must be a lab cluster.
func PointAtLab(l *lab.Lab, cs *mcnetv1.ClusterSet) *mcnetv1.ClusterSet {
	cs = cs.DeepCopy()
	cs.Spec.Broker.Server = "https://" + l.Cluster(cs.Spec.Broker.Cluster).PublicAPIServer.String()
	for i := range cs.Spec.Clusters {
		if c := l.Cluster(cs.Spec.Clusters[i].Name); c != nil {
			cs.Spec.Clusters[i].Server = "https://" + c.PublicAPIServer.String()
		}
	}
	return cs
}

// UseLabImage points the fleet at the mcnet image `make image` built, as
// `kubectl mcnet render --image-repository --image-tag` would: the lab's nodes have it
// loaded, so the rendered tree runs unchanged apart from the image's name.
func UseLabImage(l *lab.Lab, cs *mcnetv1.ClusterSet) {
	cs.Spec.Image.Repository, cs.Spec.Image.Tag = l.Images().Repository, l.Images().Tag
}

// DeliverBrokerCredentials mints a token for cluster c's identity on the broker and
// applies the Secret `kubectl mcnet broker credentials` prints to c, as an operator
// delivering it out of band would.
func DeliverBrokerCredentials(ctx context.Context, broker, c *lab.Cluster, brokerNamespace string) error {
	sa := kustomize.BrokerServiceAccount(c.Name)
	tr, err := broker.Client.CoreV1().ServiceAccounts(brokerNamespace).CreateToken(ctx, sa, &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{ExpirationSeconds: new(int64(7 * 24 * 3600))},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("broker token for %s: %w", c.Name, err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["broker"] = &clientcmdapi.Cluster{Server: "https://" + broker.PublicAPIServer.String(), CertificateAuthorityData: broker.Config.CAData}
	cfg.AuthInfos[c.Name] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["broker"] = &clientcmdapi.Context{Cluster: "broker", AuthInfo: c.Name, Namespace: brokerNamespace}
	cfg.CurrentContext = "broker"
	kc, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(naming.BrokerCredentials(c.Name, kc, tr.Status.ExpirationTimestamp.Time))
	if err != nil {
		return err
	}
	return c.Apply(ctx, &unstructured.Unstructured{Object: m})
}

// Wait waits for every cluster's components to run and be ready.
func Wait(ctx context.Context, l *lab.Lab, timeout time.Duration) error {
	var errs []error
	for _, c := range l.Clusters() {
		errs = append(errs, c.WaitWorkloads(ctx, timeout))
	}
	return errors.Join(errs...)
}
