package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NetworkTestRole says which end of a measurement an agent plays.
// +kubebuilder:validation:Enum=Server;Client
type NetworkTestRole string

const (
	// NetworkTestServer listens and answers; its status reports where.
	NetworkTestServer NetworkTestRole = "Server"
	// NetworkTestClient connects to a server and reports the measurement.
	NetworkTestClient NetworkTestRole = "Client"
)

// NetworkTestType is what a NetworkTest measures.
// +kubebuilder:validation:Enum=throughput;latency;mtu;udp
type NetworkTestType string

const (
	// TestThroughput sends TCP streams for a while and counts what the server received.
	TestThroughput NetworkTestType = "throughput"
	// TestLatency measures UDP echo round trips.
	TestLatency NetworkTestType = "latency"
	// TestMTU finds the largest packet that crosses the path unfragmented (DF set).
	TestMTU NetworkTestType = "mtu"
	// TestUDP checks that a few UDP echoes get through at all (underlay reachability).
	TestUDP NetworkTestType = "udp"
)

// Agent names the in-cluster component that runs a NetworkTest on a node.
// +kubebuilder:validation:Enum=gateway;route-agent
type Agent string

const (
	// AgentGateway is mcnet-gateway, on gateway nodes.
	AgentGateway Agent = "gateway"
	// AgentRouteAgent is mcnet-route-agent, on every node.
	AgentRouteAgent Agent = "route-agent"
)

// NetworkTestPhase is where a NetworkTest is in its life.
// +kubebuilder:validation:Enum=Pending;Ready;Running;Succeeded;Failed
type NetworkTestPhase string

const (
	// TestPending means no agent has picked the test up yet.
	TestPending NetworkTestPhase = "Pending"
	// TestReady means a server listens (status.port, status.addresses).
	TestReady NetworkTestPhase = "Ready"
	// TestRunning means a client is measuring.
	TestRunning NetworkTestPhase = "Running"
	// TestSucceeded means the result is in the status (or a server's time is up).
	TestSucceeded NetworkTestPhase = "Succeeded"
	// TestFailed means the test could not run or measure; status.message says why.
	TestFailed NetworkTestPhase = "Failed"
)

// Labels that let an agent watch only the NetworkTests addressed to it.
const (
	// NodeLabel carries spec.nodeName.
	NodeLabel = "mcnet.io/node"
	// AgentLabel carries spec.agent.
	AgentLabel = "mcnet.io/agent"
)

// NetworkTest asks an mcnet agent (gateway or route agent) on one node to serve or run
// one network measurement: `kubectl mcnet benchmark` and `diagnose` create a Server in
// one cluster and a Client in another, read the Client's status and delete both. The
// agents already run on every node with host networking, so no extra image or pod is
// needed and the measurement crosses exactly the path production traffic takes.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=mcnt,categories=mcnet
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.spec.nodeName`
// +kubebuilder:printcolumn:name="Role",type=string,JSONPath=`.spec.role`
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.spec.type`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type NetworkTest struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   NetworkTestSpec   `json:"spec"`
	Status NetworkTestStatus `json:"status,omitempty"`
}

// Bounds of a NetworkTest, checked by the API server (the CRD's validation) and again by
// the agent that runs it: a test is a measurement, never a load generator.
const (
	// MaxNetworkTestDuration is the longest a client measures or a server listens.
	MaxNetworkTestDuration = 10 * time.Minute
	// MaxNetworkTestEchoes bounds count x interval of a latency or udp run.
	MaxNetworkTestEchoes = 2 * time.Minute
	// MaxConcurrentNetworkTests is how many tests one agent runs at once; more fail.
	MaxConcurrentNetworkTests = 4
)

// NetworkTestSpec says who runs what. Targets are limited to the fleet's addresses (its
// members' pod and service CIDRs, their published gateway addresses and the broker's
// API server): the agent refuses any other.
//
// +kubebuilder:validation:XValidation:rule="!has(self.duration) || duration(self.duration) <= duration('10m')",message="spec.duration may be at most 10m"
// +kubebuilder:validation:XValidation:rule="self.role != 'Client' || self.type != 'throughput' || !has(self.duration) || duration(self.duration) <= duration('2m')",message="spec.duration of a throughput client may be at most 2m"
// +kubebuilder:validation:XValidation:rule="!has(self.interval) || duration(self.interval) <= duration('1s')",message="spec.interval may be at most 1s"
// +kubebuilder:validation:XValidation:rule="!has(self.count) || (has(self.interval) ? duration(self.interval).getMilliseconds() : 20) * self.count <= 120000",message="spec.count x spec.interval (default 20ms) may be at most 2m"
// +kubebuilder:validation:XValidation:rule="self.role != 'Client' || (has(self.target) && size(self.target) > 0)",message="spec.target is required for a client"
type NetworkTestSpec struct {
	// NodeName is the node whose agent runs the test.
	NodeName string `json:"nodeName"`
	// Agent is the component that runs it.
	Agent Agent `json:"agent"`
	// Role is Server or Client.
	Role NetworkTestRole `json:"role"`
	// Type is what is measured.
	Type NetworkTestType `json:"type"`
	// Session is a random identifier shared by a Server and its Client: a server answers
	// only packets and streams that carry it, so nobody else can use an open test port.
	// +kubebuilder:validation:MinLength=16
	Session string `json:"session"`
	// Target is the server's address and port (clients only), inside the fleet.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Target string `json:"target,omitempty"`
	// SourceCIDRs make a client send from a local address inside one of them, so that
	// replies come back through the tunnel (e.g. the client cluster's pod CIDRs).
	// +optional
	// +kubebuilder:validation:MaxItems=4
	// +kubebuilder:validation:items:MaxLength=64
	SourceCIDRs []string `json:"sourceCIDRs,omitempty"`
	// Duration of a throughput run; for a server, how long it listens at most.
	// +optional
	Duration *metav1.Duration `json:"duration,omitempty"`
	// Streams is the number of parallel TCP streams of a throughput run.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=64
	Streams int32 `json:"streams,omitempty"`
	// Count is the number of echoes of a latency or udp run.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	Count int32 `json:"count,omitempty"`
	// Interval between echoes of a latency run.
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`
}

// NetworkTestStatus is what the agent reports.
type NetworkTestStatus struct {
	// Phase is where the test is.
	// +optional
	Phase NetworkTestPhase `json:"phase,omitempty"`
	// Message says why a test failed, or what the agent is doing.
	// +optional
	Message string `json:"message,omitempty"`
	// Addresses are the server node's own addresses it listens on.
	// +optional
	Addresses []string `json:"addresses,omitempty"`
	// Port is the TCP and UDP port the server listens on.
	// +optional
	Port int32 `json:"port,omitempty"`
	// Source is the local address a client sent from.
	// +optional
	Source string `json:"source,omitempty"`
	// StartTime and CompletionTime bound the measurement.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
	// Throughput is a throughput client's result.
	// +optional
	Throughput *ThroughputResult `json:"throughput,omitempty"`
	// Latency is a latency or udp client's result.
	// +optional
	Latency *LatencyResult `json:"latency,omitempty"`
	// MTU is an mtu client's result.
	// +optional
	MTU *MTUResult `json:"mtu,omitempty"`
	// ObservedGeneration is the generation the status is for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// ThroughputResult is what the server received from all streams.
type ThroughputResult struct {
	// BitsPerSecond is the received rate over the run.
	BitsPerSecond int64 `json:"bitsPerSecond"`
	// Bytes received by the server.
	Bytes int64 `json:"bytes"`
	// Duration of the run.
	Duration metav1.Duration `json:"duration"`
	// Streams used.
	Streams int32 `json:"streams"`
}

// LatencyResult summarises echo round trips.
type LatencyResult struct {
	// Sent and Received echoes.
	Sent     int32 `json:"sent"`
	Received int32 `json:"received"`
	// Round-trip times of the received echoes.
	Min metav1.Duration `json:"min"`
	Avg metav1.Duration `json:"avg"`
	P99 metav1.Duration `json:"p99"`
	Max metav1.Duration `json:"max"`
}

// MTUResult is the path MTU found by probing with the don't-fragment bit set.
type MTUResult struct {
	// PathMTU is the largest IP packet that crossed the path and was answered.
	PathMTU int32 `json:"pathMTU"`
	// InterfaceMTU is the MTU of the client's interface toward the target: packets up
	// to this size are sent, so a smaller PathMTU means they can be lost on the way.
	InterfaceMTU int32 `json:"interfaceMTU"`
	// Interface is the client's outgoing interface toward the target.
	// +optional
	Interface string `json:"interface,omitempty"`
}

// +kubebuilder:object:root=true

// NetworkTestList is a list of NetworkTests.
type NetworkTestList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NetworkTest `json:"items"`
}
