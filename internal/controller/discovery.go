package controller

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cluster"

	"github.com/mcnet-io/mcnet/controllers/serviceexport"
	"github.com/mcnet-io/mcnet/controllers/serviceimport"
)

// setupDiscovery adds service discovery's writers to mgr: the ServiceExport publisher
// and the ServiceImport importer (leader-only). The clusterset DNS server that reads
// what they write runs in its own process (RunDNS), so it answers through a broker
// outage, a controller restart and a change of leader.
func setupDiscovery(mgr ctrl.Manager, broker cluster.Cluster, owner *metav1.OwnerReference, o Options) error {
	if err := (&serviceexport.Reconciler{
		ClusterID: o.Config.ClusterID, Local: mgr.GetClient(), Broker: broker, BrokerNamespace: o.Config.Broker.Namespace, Owner: owner,
		Recorder: mgr.GetEventRecorder("mcnet-controller"),
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	return (&serviceimport.Reconciler{
		Local: mgr.GetClient(), Broker: broker, BrokerNamespace: o.Config.Broker.Namespace, Fleet: o.Config.Fleet,
		ClusterID: o.Config.ClusterID, SystemNamespace: o.Namespace, APIReader: mgr.GetAPIReader(),
		Recorder: mgr.GetEventRecorder("mcnet-controller"),
	}).SetupWithManager(mgr)
}
