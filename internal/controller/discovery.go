package controller

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/mcnet-io/mcnet/controllers/serviceexport"
	"github.com/mcnet-io/mcnet/controllers/serviceimport"
	"github.com/mcnet-io/mcnet/internal/dns"
)

// setupDiscovery adds service discovery to mgr: the ServiceExport publisher, the
// ServiceImport importer and the CoreDNS server block (leader-only: they write) and the
// clusterset DNS server with the source that feeds it (every replica: they only read). The DNS server starts
// listening once the caches have synced and the index holds every import, so it never
// answers NXDOMAIN for a name it merely has not read yet. --dns-bind-address=0 disables
// the server.
func setupDiscovery(mgr ctrl.Manager, broker cluster.Cluster, owner *metav1.OwnerReference, o Options) error {
	if err := (&serviceexport.Reconciler{
		ClusterID: o.ClusterID, Local: mgr.GetClient(), Broker: broker, BrokerNamespace: o.BrokerNamespace, Owner: owner,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&serviceimport.Reconciler{
		Local: mgr.GetClient(), Broker: broker, BrokerNamespace: o.BrokerNamespace,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	if o.DNSBindAddress == "0" || o.DNSBindAddress == "" {
		return nil
	}
	index := dns.NewIndex()
	src := &dns.Source{Index: index, Client: mgr.GetClient(), Namespace: o.Namespace}
	if err := src.SetupWithManager(mgr); err != nil {
		return err
	}
	domain := o.Domain
	if domain == "" {
		domain = "clusterset.local"
	}
	server := dns.NewServer(domain, o.ClusterID, index)
	var serving atomic.Bool
	if err := mgr.Add(nonLeader(func(ctx context.Context) error {
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return ctx.Err()
		}
		if err := src.Sync(ctx); err != nil {
			return err
		}
		log.FromContext(ctx).Info("serving DNS", "domain", domain, "address", o.DNSBindAddress)
		serving.Store(true)
		return server.ListenAndServe(ctx, o.DNSBindAddress)
	})); err != nil {
		return err
	}
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		return keepCoreDNSConfig(ctx, mgr.GetClient(), mgr.GetAPIReader(), o.Namespace, domain)
	})); err != nil {
		return err
	}
	return mgr.AddReadyzCheck("dns", func(*http.Request) error {
		if !serving.Load() {
			return errors.New("DNS server not serving yet")
		}
		return nil
	})
}

// CoreDNSConfigMap is the ConfigMap in kube-system holding the CoreDNS server block for
// the clusterset domain, under the key CoreDNSServerKey.
const (
	CoreDNSConfigMap = "mcnet-coredns"
	CoreDNSServerKey = "mcnet.server"
	dnsServiceName   = "mcnet-dns"
)

// CoreDNSServerBlock forwards domain to mcnet's DNS Service at addrs.
func CoreDNSServerBlock(domain string, addrs []string) string {
	return fmt.Sprintf(`# Written by mcnet-controller from the Service %s; edits are overwritten.
%s:53 {
    errors
    forward . %s
}
`, dnsServiceName, domain, strings.Join(addrs, " "))
}

// keepCoreDNSConfig keeps kube-system/mcnet-coredns pointing at the mcnet-dns Service's
// ClusterIPs. The address is only known once the Service exists, which is why the render
// cannot write it into Git; CoreDNS's own configuration is never touched. It polls,
// because ConfigMaps are not cached (the controller may read only this one).
func keepCoreDNSConfig(ctx context.Context, c client.Client, reader client.Reader, namespace, domain string) error {
	logger := log.FromContext(ctx)
	_ = wait.PollUntilContextCancel(ctx, 5*time.Second, true, func(ctx context.Context) (bool, error) {
		var svc corev1.Service
		if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: dnsServiceName}, &svc); err != nil {
			return false, nil // not applied yet; the next poll finds it
		}
		var addrs []string
		for _, ip := range svc.Spec.ClusterIPs {
			if ip != corev1.ClusterIPNone && ip != "" {
				addrs = append(addrs, ip)
			}
		}
		if len(addrs) == 0 {
			return false, nil
		}
		want := map[string]string{CoreDNSServerKey: CoreDNSServerBlock(domain, addrs)}
		var cm corev1.ConfigMap
		err := reader.Get(ctx, client.ObjectKey{Namespace: metav1.NamespaceSystem, Name: CoreDNSConfigMap}, &cm)
		switch {
		case apierrors.IsNotFound(err):
			cm = corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespaceSystem, Name: CoreDNSConfigMap, Labels: map[string]string{"app.kubernetes.io/managed-by": "mcnet-controller", "app.kubernetes.io/part-of": "mcnet"}},
				Data:       want,
			}
			err = c.Create(ctx, &cm)
		case err == nil && !maps.Equal(cm.Data, want):
			cm.Data = want
			err = c.Update(ctx, &cm)
		}
		if err != nil {
			logger.Error(err, "write the CoreDNS server block", "configMap", metav1.NamespaceSystem+"/"+CoreDNSConfigMap)
		}
		return false, nil
	})
	return nil
}

// nonLeader runs f in every replica, leader or not.
type nonLeader func(ctx context.Context) error

func (f nonLeader) Start(ctx context.Context) error { return f(ctx) }

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (nonLeader) NeedLeaderElection() bool { return false }

var _ manager.LeaderElectionRunnable = nonLeader(nil)
