package dataplane

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"time"
)

// Driver names a cable driver: the kind of tunnel between two clusters' gateways.
type Driver string

const (
	// DriverVXLAN is plain kernel VXLAN: fast, unencrypted, for trusted networks.
	DriverVXLAN Driver = "vxlan"
	// DriverWireGuard is WireGuard: the kernel device when the module exists, otherwise
	// an embedded userspace wireguard-go device.
	DriverWireGuard Driver = "wireguard"
)

// Drivers lists every cable driver this package implements, in a stable order.
func Drivers() []Driver { return []Driver{DriverVXLAN, DriverWireGuard} }

// Valid reports whether d is a driver this package implements.
func (d Driver) Valid() bool { return slices.Contains(Drivers(), d) }

// Overhead is the number of bytes the driver's encapsulation adds to a packet; the
// tunnel MTU is the underlay MTU minus this. v6Underlay selects the IPv6 outer header.
func (d Driver) Overhead(v6Underlay bool) int {
	switch d {
	case DriverVXLAN:
		// outer IP (20 or 40) + UDP 8 + VXLAN 8 + inner Ethernet 14.
		if v6Underlay {
			return 70
		}
		return 50
	case DriverWireGuard:
		// WireGuard's own recommendation: 80 fits both IPv4 and IPv6 outer headers
		// (40 + 8 UDP + 32 WireGuard), so roaming between families never shrinks it.
		return 80
	}
	return 0
}

// Default ports and identifiers. VXLAN ports and VNIs must be the same on every node
// of the fleet because the kernel demultiplexes received packets by (port, VNI).
const (
	// DefaultVXLANPort is the UDP port of the inter-cluster VXLAN cable (IANA VXLAN).
	DefaultVXLANPort = 4789
	// DefaultIntraClusterPort is the UDP port of the VXLAN from nodes to the gateway;
	// it differs from the IANA port so a CNI using 4789 keeps its socket options.
	DefaultIntraClusterPort = 4790
	// DefaultWireGuardPort is the UDP port the WireGuard cable listens on.
	DefaultWireGuardPort = 51820
	// DefaultTable is the routing table holding routes to remote clusters.
	DefaultTable = 2711
	// DefaultRulePriority is the priority of the ip rules selecting DefaultTable; it
	// sits before the main table (32766) and after the local table (0).
	DefaultRulePriority = 2711
	// DefaultPersistentKeepalive keeps NAT mappings open and makes the side that
	// (re)configures a peer initiate the handshake.
	DefaultPersistentKeepalive = 25 * time.Second

	interVNI = 2711 // VNI of the inter-cluster VXLAN device
	intraVNI = 2712 // VNI of the intra-cluster VXLAN device
)

// State is the whole desired dataplane state of one node. Apply makes the kernel match
// it; anything mcnet made earlier and State no longer asks for is removed.
type State struct {
	// ClusterID names this node's cluster; VXLAN MAC addresses are derived from it,
	// so it must equal the ClusterID the remote clusters use for this cluster.
	ClusterID string `json:"clusterID"`
	// LocalCIDRs are this cluster's pod and service CIDRs (either family).
	LocalCIDRs []netip.Prefix `json:"localCIDRs,omitempty"`
	// Remotes are the remote clusters this node must reach.
	Remotes []Remote `json:"remotes,omitempty"`
	// Gateway is set when this node is its cluster's active gateway: it then owns the
	// cables. Nil on every other node.
	Gateway *Gateway `json:"gateway,omitempty"`
	// ActiveGateway is the cluster-network address of the active gateway node; nodes
	// that are not the gateway tunnel remote traffic to it. Ignored when Gateway is set;
	// when neither is set no remote traffic leaves the node.
	ActiveGateway netip.Addr `json:"activeGateway,omitzero"`
	// UnderlayMTU overrides the MTU of the network carrying the tunnels; zero means the
	// MTU of the interface the main table uses towards the remote endpoint / gateway.
	UnderlayMTU int `json:"underlayMTU,omitempty"`
	// LooseRPFilter names extra interfaces (for example the CNI's host interface) on
	// which replies from remote clusters arrive while their reverse route points into
	// an mcnet device; their rp_filter is set to loose. The interface towards the
	// active gateway is found automatically.
	LooseRPFilter []string `json:"looseRPFilter,omitempty"`
	// Remap maps this cluster's pod CIDR onto its global range when the fleet remaps
	// the cluster (see PrefixMap). Only the active gateway programs it.
	Remap []PrefixMap `json:"remap,omitempty"`
}

// Gateway is the part of State only the active gateway has.
type Gateway struct {
	// VXLANPort is the UDP port of the VXLAN cable; zero means DefaultVXLANPort. Every
	// cluster must use the same port (the kernel VXLAN FDB has no per-peer port).
	VXLANPort uint16 `json:"vxlanPort,omitempty"`
	// WireGuardPort is the UDP port WireGuard listens on; zero means DefaultWireGuardPort.
	WireGuardPort uint16 `json:"wireguardPort,omitempty"`
	// HealthCheckIPs are addresses inside this cluster's CIDRs that the gateway answers
	// health probes on; they are added to the gateway node (IPv4 only for now) while
	// it is the active gateway, so remote gateways reach them through the cables.
	HealthCheckIPs []netip.Addr `json:"healthCheckIPs,omitempty"`
	// ClusterNodes are the addresses of this cluster's nodes: the gateway admits the
	// intra-cluster VXLAN (IntraClusterPort, its VNI) only from them, so no host
	// outside the cluster can put frames into the cluster's pod network through it.
	// Empty admits nobody.
	ClusterNodes []netip.Addr `json:"clusterNodes,omitempty"`
}

// Remote is one remote cluster.
type Remote struct {
	// ClusterID names the remote cluster.
	ClusterID string `json:"clusterID"`
	// CIDRs are the remote cluster's pod and service CIDRs.
	CIDRs []netip.Prefix `json:"cidrs"`
	// Cable is how the active gateway reaches the remote cluster's active gateway.
	Cable Cable `json:"cable"`
}

// Cable is the tunnel to one remote gateway.
type Cable struct {
	// Driver selects the tunnel kind.
	Driver Driver `json:"driver"`
	// Endpoints are the remote gateway's underlay addresses, preferred first; the
	// first one of a family this node can route is used.
	Endpoints []netip.Addr `json:"endpoints"`
	// Port is the remote gateway's UDP port; zero means the driver's default.
	Port uint16 `json:"port,omitempty"`
	// PublicKey is the remote gateway's WireGuard public key (wireguard only).
	PublicKey Key `json:"publicKey,omitzero"`
}

// Key is a WireGuard (Curve25519) key. Only public keys ever leave this package.
type Key [32]byte

// ParseKey decodes a base64 WireGuard key, as wg(8) prints it.
func ParseKey(s string) (Key, error) {
	var k Key
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return k, fmt.Errorf("parse key: %w", err)
	}
	if len(b) != len(k) {
		return k, fmt.Errorf("parse key: %d bytes, want %d", len(b), len(k))
	}
	copy(k[:], b)
	return k, nil
}

// String returns the base64 form wg(8) uses.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// IsZero reports whether k is unset.
func (k Key) IsZero() bool { return k == Key{} }

// MarshalText implements encoding.TextMarshaler.
func (k Key) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (k *Key) UnmarshalText(b []byte) error {
	p, err := ParseKey(string(b))
	if err != nil {
		return err
	}
	*k = p
	return nil
}

// CableStatus is what the kernel says about the cable to one remote cluster, for
// health checks and metrics.
type CableStatus struct {
	// ClusterID is the remote cluster.
	ClusterID string
	// Driver is the cable's driver.
	Driver Driver
	// Device is the link carrying the cable.
	Device string
	// Endpoint is where packets for the remote gateway are sent (WireGuard updates it
	// when the peer roams).
	Endpoint netip.AddrPort
	// PublicKey is the peer's public key (WireGuard only).
	PublicKey Key
	// LastHandshake is the time of the last completed WireGuard handshake; zero for
	// VXLAN, which has no handshake, or when none happened yet.
	LastHandshake time.Time
	// RxBytes and TxBytes count the peer's traffic (WireGuard only: a VXLAN device is
	// shared by all remotes and has no per-peer counters).
	RxBytes, TxBytes int64
}

// Config names what a Dataplane creates on the node. The defaults suit one mcnet per
// node; tests and labs running several nodes in one host give each its own names.
type Config struct {
	// LinkPrefix prefixes every link name: <prefix>-vx (VXLAN cable), <prefix>-wg
	// (WireGuard cable) and <prefix>-vi (intra-cluster VXLAN). At most 11 characters
	// (IFNAMSIZ). Default "mcnet". Userspace WireGuard UAPI sockets live in
	// /var/run/wireguard, which network namespaces share: nodes in one host need
	// distinct prefixes unless each has its own mount namespace.
	LinkPrefix string
	// ChainPrefix names mcnet's nftables table, lowercased (default "MCNET": table
	// inet mcnet), and the iptables chains <ChainPrefix>-FORWARD, -INPUT and
	// -POSTROUTING of earlier versions, which Apply removes.
	ChainPrefix string
	// Table is the routing table for remote routes. Default DefaultTable.
	Table int
	// RulePriority is the priority of mcnet's ip rules. Default DefaultRulePriority.
	RulePriority int
	// StateDir holds files the node keeps across restarts. Default /var/lib/mcnet.
	StateDir string
	// KeyFile is the WireGuard private key, created (0600) on first use and never
	// logged. Default <StateDir>/wireguard.key.
	KeyFile string
	// IntraClusterPort is the UDP port of the intra-cluster VXLAN; it must be the same
	// on every node of a cluster. Default DefaultIntraClusterPort.
	IntraClusterPort uint16
	// PersistentKeepalive for WireGuard peers. Default DefaultPersistentKeepalive.
	PersistentKeepalive time.Duration
}

var linkPrefixRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.]{0,10}$`)
var chainPrefixRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,14}$`)

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.LinkPrefix == "" {
		c.LinkPrefix = "mcnet"
	}
	if c.ChainPrefix == "" {
		c.ChainPrefix = "MCNET"
	}
	if c.Table == 0 {
		c.Table = DefaultTable
	}
	if c.RulePriority == 0 {
		c.RulePriority = DefaultRulePriority
	}
	if c.StateDir == "" {
		c.StateDir = "/var/lib/mcnet"
	}
	if c.KeyFile == "" {
		c.KeyFile = filepath.Join(c.StateDir, "wireguard.key")
	}
	if c.IntraClusterPort == 0 {
		c.IntraClusterPort = DefaultIntraClusterPort
	}
	if c.PersistentKeepalive == 0 {
		c.PersistentKeepalive = DefaultPersistentKeepalive
	}
	return c
}

// validate reports every problem of a defaulted Config at once.
func (c Config) validate() error {
	var errs []error
	if !linkPrefixRE.MatchString(c.LinkPrefix) {
		errs = append(errs, fmt.Errorf("link prefix %q: want 1-11 of [a-zA-Z0-9_.]", c.LinkPrefix))
	}
	// The old iptables chain names it also derives are limited to 28 characters;
	// the longest suffix is 12.
	if !chainPrefixRE.MatchString(c.ChainPrefix) {
		errs = append(errs, fmt.Errorf("chain prefix %q: want 1-15 of [A-Za-z0-9_-]", c.ChainPrefix))
	}
	// Tables 253-255 are the kernel's default, main and local tables.
	if c.Table < 1 || (c.Table >= 253 && c.Table <= 255) {
		errs = append(errs, fmt.Errorf("table %d: reserved", c.Table))
	}
	if c.RulePriority < 1 || c.RulePriority >= 32766 {
		errs = append(errs, fmt.Errorf("rule priority %d: want 1-32765 (before the main table)", c.RulePriority))
	}
	return errors.Join(errs...)
}

// ErrInvalidState wraps every State validation error; callers can tell a State only
// the user can fix from a kernel failure.
var ErrInvalidState = errors.New("invalid dataplane state")

// Validate reports every problem of s at once, wrapped in ErrInvalidState.
func (s State) Validate() error {
	var errs []error
	if s.ClusterID == "" && len(s.Remotes) > 0 {
		errs = append(errs, errors.New("clusterID is empty"))
	}
	for _, p := range s.LocalCIDRs {
		if !p.IsValid() || p != p.Masked() {
			errs = append(errs, fmt.Errorf("local CIDR %s: not a masked prefix", p))
		}
	}
	seen := map[string]bool{s.ClusterID: true}
	for _, r := range s.Remotes {
		if r.ClusterID == "" || seen[r.ClusterID] {
			errs = append(errs, fmt.Errorf("remote %q: empty or duplicate cluster ID", r.ClusterID))
		}
		seen[r.ClusterID] = true
		for _, p := range r.CIDRs {
			if !p.IsValid() || p != p.Masked() {
				errs = append(errs, fmt.Errorf("remote %s CIDR %s: not a masked prefix", r.ClusterID, p))
				continue
			}
			for _, l := range s.LocalCIDRs {
				if l.Overlaps(p) {
					errs = append(errs, fmt.Errorf("remote %s CIDR %s overlaps local CIDR %s", r.ClusterID, p, l))
				}
			}
			// A tunnel endpoint inside a routed CIDR would route the tunnel into itself.
			for _, e := range r.Cable.Endpoints {
				if p.Contains(e) {
					errs = append(errs, fmt.Errorf("remote %s CIDR %s contains its endpoint %s", r.ClusterID, p, e))
				}
			}
		}
		if !r.Cable.Driver.Valid() {
			errs = append(errs, fmt.Errorf("remote %s: unknown cable driver %q", r.ClusterID, r.Cable.Driver))
		}
		if s.Gateway == nil {
			continue // only the gateway uses the cable
		}
		if len(r.Cable.Endpoints) == 0 {
			errs = append(errs, fmt.Errorf("remote %s: no endpoints", r.ClusterID))
		}
		if r.Cable.Driver == DriverWireGuard && r.Cable.PublicKey.IsZero() {
			errs = append(errs, fmt.Errorf("remote %s: wireguard cable without public key", r.ClusterID))
		}
		if r.Cable.Driver == DriverVXLAN && r.Cable.Port != 0 && r.Cable.Port != s.Gateway.vxlanPort() {
			errs = append(errs, fmt.Errorf("remote %s: vxlan port %d differs from local %d (one port fleet-wide)", r.ClusterID, r.Cable.Port, s.Gateway.vxlanPort()))
		}
	}
	for i, a := range s.Remotes {
		for _, b := range s.Remotes[i+1:] {
			for _, pa := range a.CIDRs {
				for _, pb := range b.CIDRs {
					if pa.Overlaps(pb) {
						errs = append(errs, fmt.Errorf("remote %s CIDR %s overlaps remote %s CIDR %s", a.ClusterID, pa, b.ClusterID, pb))
					}
				}
			}
		}
	}
	errs = append(errs, s.validateRemap()...)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidState, err)
	}
	return nil
}

func (g *Gateway) vxlanPort() uint16 {
	if g == nil || g.VXLANPort == 0 {
		return DefaultVXLANPort
	}
	return g.VXLANPort
}

func (g *Gateway) wireguardPort() uint16 {
	if g == nil || g.WireGuardPort == 0 {
		return DefaultWireGuardPort
	}
	return g.WireGuardPort
}

// clusterMAC derives a stable, locally administered unicast MAC from a name, so both
// ends of a VXLAN know each other's address without ARP across the underlay.
func clusterMAC(name string) [6]byte {
	sum := sha256.Sum256([]byte("mcnet/" + name))
	var mac [6]byte
	copy(mac[:], sum[:6])
	mac[0] = (mac[0] &^ 0x01) | 0x02 // unicast, locally administered
	return mac
}
