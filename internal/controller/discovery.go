package controller

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/mcnet-io/mcnet/controllers/serviceexport"
	"github.com/mcnet-io/mcnet/controllers/serviceimport"
	"github.com/mcnet-io/mcnet/internal/dns"
)

// setupDiscovery adds service discovery to mgr: the ServiceExport publisher and the
// ServiceImport importer (leader-only: they write) and the clusterset DNS server with the
// source that feeds it (every replica: they only read). The DNS server starts listening
// once the caches have synced and the index holds every import, so it never answers
// NXDOMAIN for a name it merely has not read yet. --dns-bind-address=0 disables the
// server. CoreDNS's server block for the domain is rendered into Git, not written here.
func setupDiscovery(mgr ctrl.Manager, broker cluster.Cluster, owner *metav1.OwnerReference, o Options) error {
	if err := (&serviceexport.Reconciler{
		ClusterID: o.Config.ClusterID, Local: mgr.GetClient(), Broker: broker, BrokerNamespace: o.Config.Broker.Namespace, Owner: owner,
		Recorder: mgr.GetEventRecorder("mcnet-controller"),
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&serviceimport.Reconciler{
		Local: mgr.GetClient(), Broker: broker, BrokerNamespace: o.Config.Broker.Namespace, Fleet: o.Config.Fleet,
		ClusterID: o.Config.ClusterID, SystemNamespace: o.Namespace,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	if o.DNSBindAddress == "0" || o.DNSBindAddress == "" {
		return nil
	}
	index := dns.NewIndex()
	src := &dns.Source{Index: index, Client: mgr.GetClient(), Namespace: o.Namespace, Fleet: o.Config.Fleet}
	if err := src.SetupWithManager(mgr); err != nil {
		return err
	}
	domain := o.Config.Discovery.Domain
	server := dns.NewServer(domain, o.Config.ClusterID, index)
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
	return mgr.AddReadyzCheck("dns", func(*http.Request) error {
		if !serving.Load() {
			return errors.New("DNS server not serving yet")
		}
		return nil
	})
}

// nonLeader runs f in every replica, leader or not.
type nonLeader func(ctx context.Context) error

func (f nonLeader) Start(ctx context.Context) error { return f(ctx) }

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (nonLeader) NeedLeaderElection() bool { return false }

var _ manager.LeaderElectionRunnable = nonLeader(nil)
