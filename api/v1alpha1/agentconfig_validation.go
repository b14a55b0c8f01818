package v1alpha1

import (
	"net/netip"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// ValidateAgentConfig returns every problem of a defaulted AgentConfig, each naming its
// field. The name follows Kubernetes' validation convention.
func ValidateAgentConfig(c *AgentConfig) field.ErrorList {
	var errs field.ErrorList
	if c.APIVersion != GroupVersion.String() {
		errs = append(errs, field.Invalid(field.NewPath("apiVersion"), c.APIVersion, "must be "+GroupVersion.String()))
	}
	if c.Kind != AgentConfigKind {
		errs = append(errs, field.Invalid(field.NewPath("kind"), c.Kind, "must be "+AgentConfigKind))
	}
	errs = append(errs, validateName(field.NewPath("clusterID"), c.ClusterID, "this cluster's name in the fleet, e.g. east")...)
	if c.Fleet == "" {
		errs = append(errs, field.Required(field.NewPath("fleet"), "the name of the Fleet object holding the membership table (the ClusterSet's name)"))
	}
	for _, msg := range validation.IsDNS1123Subdomain(c.Fleet) {
		if c.Fleet != "" {
			errs = append(errs, field.Invalid(field.NewPath("fleet"), c.Fleet, msg))
		}
	}
	errs = append(errs, validateCIDRs(field.NewPath("podCIDRs"), c.PodCIDRs)...)
	errs = append(errs, validateCIDRs(field.NewPath("serviceCIDRs"), c.ServiceCIDRs)...)
	errs = append(errs, validateCable(field.NewPath("cable"), c.Cable)...)
	errs = append(errs, validatePort(field.NewPath("cablePort"), c.CablePort, false)...)

	broker := field.NewPath("broker")
	if c.Broker.Server != "" {
		errs = append(errs, validateURL(broker.Child("server"), c.Broker.Server)...)
	}
	for _, msg := range validation.IsDNS1123Label(c.Broker.Namespace) {
		errs = append(errs, field.Invalid(broker.Child("namespace"), c.Broker.Namespace, msg))
	}

	disc := field.NewPath("discovery")
	for _, msg := range validation.IsDNS1123Subdomain(c.Discovery.Domain) {
		errs = append(errs, field.Invalid(disc.Child("domain"), c.Discovery.Domain, msg))
	}
	for i, s := range c.Discovery.DNSServiceIPs {
		if _, err := netip.ParseAddr(s); err != nil {
			errs = append(errs, field.Invalid(disc.Child("dnsServiceIPs").Index(i), s, "not an IP address"))
		}
	}

	gw := field.NewPath("gateway")
	errs = append(errs, validateSelector(gw.Child("nodeSelector"), c.Gateway.NodeSelector)...)
	errs = append(errs, validatePort(gw.Child("healthCheckPort"), c.Gateway.HealthCheckPort, false)...)
	if p := c.Gateway.LivenessPort; p != nil {
		errs = append(errs, validatePort(gw.Child("livenessPort"), *p, true)...)
	}
	return errs
}
