package v1alpha1

// SetDefaults_AgentConfig fills in what an AgentConfig may leave out. It is idempotent
// and never overwrites a value the document sets. The name follows Kubernetes'
// defaulting convention (SetDefaults_<Kind>).
func SetDefaults_AgentConfig(c *AgentConfig) {
	if c.APIVersion == "" {
		c.APIVersion = GroupVersion.String()
	}
	if c.Kind == "" {
		c.Kind = AgentConfigKind
	}
	if c.Cable == "" {
		c.Cable = CableWireGuard
	}
	if c.CablePort == 0 {
		c.CablePort = DefaultCablePort(c.Cable)
	}
	if c.Broker.Namespace == "" {
		c.Broker.Namespace = DefaultBrokerNamespace
	}
	if c.Discovery.Domain == "" {
		c.Discovery.Domain = DefaultDomain
	}
	if len(c.Gateway.NodeSelector) == 0 {
		c.Gateway.NodeSelector = map[string]string{GatewayLabel: "true"}
	}
	if c.Gateway.HealthCheckPort == 0 {
		c.Gateway.HealthCheckPort = DefaultHealthCheckPort
	}
	if c.Gateway.LivenessPort == nil {
		p := int32(DefaultLivenessPort)
		c.Gateway.LivenessPort = &p
	}
}
