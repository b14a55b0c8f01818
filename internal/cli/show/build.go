package show

// Build is where show's sections are computed: each reads only the snapshot, so
// the views can be tested from a snapshot without a cluster.

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/inspect"
	"github.com/mcnet-io/mcnet/internal/output"
)

// Build turns a snapshot into the sections asked for. It never fails: what the
// snapshot could not read is in Problems, and a section with nothing to show is
// left empty for the printer to explain. Unknown section names are ignored here;
// ParseSections has refused them already.
func Build(s *inspect.Snapshot, sections []string) ClusterView {
	v := ClusterView{Context: s.Context, Cluster: s.ClusterID, Problems: s.Problems}
	// Views are built from one snapshot, so the sections of a block agree with
	// each other even while the cluster changes.
	for _, sec := range sections {
		switch sec {
		case "networks":
			// Every Cluster object this cluster holds: its own and those the
			// controller mirrored from the broker.
			for _, c := range s.Clusters {
				nv := NetworkView{
					Cluster: c.Spec.ClusterID, Local: c.Spec.ClusterID == s.ClusterID,
					PodCIDRs: c.Spec.PodCIDRs, ServiceCIDRs: c.Spec.ServiceCIDRs,
					Cable: string(c.Spec.Cable), Version: c.Spec.Version,
				}
				// Global ranges come from the fleet table in the AgentConfig,
				// not from what the member announces, since that is what the
				// components act on.
				if m := s.FleetMember(c.Spec.ClusterID); m != nil && m.Remapped {
					nv.GlobalPodCIDRs, nv.GlobalServiceCIDRs = m.GlobalPodCIDRs, m.GlobalServiceCIDRs
				}
				v.Networks = append(v.Networks, nv)
			}
		case "gateways":
			// Every Gateway object, the standbys' and stale ones included: a
			// leftover Gateway is shown as such rather than hidden.
			sel := s.GatewaySelector()
			for _, g := range s.Gateways {
				gv := GatewayView{Node: g.Name, HA: output.Dash(string(g.Status.HAStatus)), Cable: string(g.Status.Cable), Version: g.Status.Version, Ready: "Unknown", Remotes: len(g.Status.Connections)}
				if c := meta.FindStatusCondition(g.Status.Conditions, "Ready"); c != nil {
					gv.Ready = string(c.Status)
				}
				if g.Status.ExpireTime != nil {
					gv.ExpireTime = g.Status.ExpireTime.UTC().Format(time.RFC3339Nano)
				}
				// A status past its expireTime is a claim nobody renews: keep what
				// it said in ReportedHA and show the gateway as expired.
				if s.Expired(&g) {
					gv.Expired, gv.ReportedHA, gv.HA, gv.Ready = true, gv.HA, "expired", "Unknown"
				}
				for _, c := range g.Status.Connections {
					if c.Status == mcnetv1.Connected {
						gv.Connected++
					}
				}
				if n := s.Node(g.Name); n != nil {
					gv.Labelled = inspect.Matches(n.Labels, sel)
				}
				v.Gateways = append(v.Gateways, gv)
			}
		case "connections":
			// An empty list, not nil: "no connections" is an answer JSON readers
			// should see. Only active gateways carry traffic, so only theirs count.
			v.Connections = []ConnectionView{}
			for _, g := range s.ActiveGateways() {
				for _, c := range g.Status.Connections {
					v.Connections = append(v.Connections, connectionView(g.Name, c))
				}
			}
		case "endpoints":
			// The Endpoints this cluster holds: its own and the remotes' copies
			// from the broker, which its gateway builds cables to.
			for _, e := range s.Endpoints {
				v.Endpoints = append(v.Endpoints, EndpointView{
					Cluster: e.Spec.ClusterID, Gateway: e.Spec.Hostname, Cable: string(e.Spec.Cable), Port: e.Spec.Port,
					PrivateIPs: e.Spec.PrivateIPs, PublicIPs: e.Spec.PublicIPs, HealthCheckIPs: e.Spec.HealthCheckIPs,
					PublicKey: e.Spec.PublicKey, Subnets: e.Spec.Subnets,
				})
			}
		case "services":
			v.Services = services(s)
		case "versions":
			v.Versions = versions(s)
		}
	}
	return v
}

// connectionView flattens one Connection of gateway gw's status.
func connectionView(gw string, c mcnetv1.Connection) ConnectionView {
	// The cable that runs, as the gateway reports it; the remote's published
	// preference is not the pair's driver.
	cv := ConnectionView{Gateway: gw, Remote: c.Cluster, Status: string(c.Status), Cable: string(c.Cable), Port: c.Port,
		UsingIP: c.UsingIP, NAT: c.NAT, LossPercent: c.LossPercent, RxBytes: c.RxBytes, TxBytes: c.TxBytes, Message: c.Message}
	if c.Endpoint != nil {
		cv.RemoteNode = c.Endpoint.Hostname
	}
	if c.RTT != nil {
		cv.RTTAvg, cv.RTTMin, cv.RTTMax = c.RTT.Avg.Duration.String(), c.RTT.Min.Duration.String(), c.RTT.Max.Duration.String()
	}
	if c.LastTransitionTime != nil {
		t := c.LastTransitionTime.UTC().Format(time.RFC3339)
		cv.Since = &t
	}
	return cv
}

// services lists the cluster's exports and imports. Unknown conditions stay
// "Unknown": a ServiceExport nobody has reconciled yet says so.
func services(s *inspect.Snapshot) *ServicesView {
	sv := &ServicesView{Exports: []ExportView{}, Imports: []ImportView{}}
	for _, e := range s.Exports {
		ev := ExportView{Namespace: e.Namespace, Name: e.Name, Valid: "Unknown", Conflict: "Unknown"}
		if c := meta.FindStatusCondition(e.Status.Conditions, "Valid"); c != nil {
			ev.Valid = string(c.Status)
			if c.Status != "True" {
				ev.Message = c.Message
			}
		}
		if c := meta.FindStatusCondition(e.Status.Conditions, "Conflict"); c != nil {
			ev.Conflict = string(c.Status)
			if c.Status == "True" {
				ev.Message = c.Message
			}
		}
		sv.Exports = append(sv.Exports, ev)
	}
	for _, i := range s.Imports {
		iv := ImportView{Namespace: i.Namespace, Name: i.Name, Type: string(i.Spec.Type), IPs: i.Spec.IPs}
		for _, p := range i.Spec.Ports {
			iv.Ports = append(iv.Ports, fmt.Sprintf("%d/%s", p.Port, p.Protocol))
		}
		for _, c := range i.Status.Clusters {
			iv.Clusters = append(iv.Clusters, c.Cluster)
		}
		sv.Imports = append(sv.Imports, iv)
	}
	return sv
}

// versions reads the images from the workloads' pod templates (what should run)
// and the gateways' statuses (what does).
func versions(s *inspect.Snapshot) *VersionsView {
	v := &VersionsView{Kubernetes: s.ServerVersion, Gateways: map[string]string{}}
	if s.Controller != nil {
		v.Controller = inspect.Image(&s.Controller.Spec.Template.Spec)
	}
	if s.GatewayDS != nil {
		v.Gateway = inspect.Image(&s.GatewayDS.Spec.Template.Spec)
	}
	if s.RouteAgent != nil {
		v.RouteAgent = inspect.Image(&s.RouteAgent.Spec.Template.Spec)
	}
	if self := s.Self(); self != nil {
		v.Announced = self.Spec.Version
	}
	for _, g := range s.Gateways {
		if g.Status.Version != "" {
			v.Gateways[g.Name] = g.Status.Version
		}
	}
	return v
}
