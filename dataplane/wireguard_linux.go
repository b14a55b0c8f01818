package dataplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// PublicKey returns the node's WireGuard public key, creating the private key file
// (mode 0600) on first use. Publish it; the private key never leaves the file.
func (d *Dataplane) PublicKey() (Key, error) {
	k, err := loadOrCreateKey(d.cfg.KeyFile)
	if err != nil {
		return Key{}, err
	}
	return Key(k.PublicKey()), nil
}

// loadOrCreateKey reads the private key file, or creates it atomically.
func loadOrCreateKey(path string) (wgtypes.Key, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := wgtypes.ParseKey(string(bytes.TrimSpace(b)))
		if err != nil {
			// Never echo the file: it is a private key, even when malformed.
			return wgtypes.Key{}, fmt.Errorf("wireguard key file %s: malformed", path)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return wgtypes.Key{}, fmt.Errorf("read wireguard key file: %w", err)
	}
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("generate wireguard key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return wgtypes.Key{}, fmt.Errorf("create key directory: %w", err)
	}
	// Write a temporary file created 0600 and rename it, so a crash never leaves a
	// truncated key and the key is never readable by others, even briefly.
	f, err := os.CreateTemp(filepath.Dir(path), ".wireguard-key-*")
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("create key file: %w", err)
	}
	defer os.Remove(f.Name())
	_, werr := f.WriteString(k.String() + "\n")
	if err := errors.Join(werr, f.Chmod(0o600), f.Sync(), f.Close()); err != nil {
		return wgtypes.Key{}, fmt.Errorf("write key file: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return wgtypes.Key{}, fmt.Errorf("install key file: %w", err)
	}
	return k, nil
}

// configureWireGuard makes the device's key, port and peers equal to spec, touching
// only what differs so established sessions survive unrelated changes. Peers not in
// spec are removed (ReplacePeers semantics without dropping every session).
func (d *Dataplane) configureWireGuard(ctx context.Context, spec wgSpec) error {
	priv, err := loadOrCreateKey(d.cfg.KeyFile)
	if err != nil {
		return err
	}
	dev, err := d.k.wg.Device(spec.Link)
	if err != nil {
		return fmt.Errorf("read wireguard %s: %w", spec.Link, err)
	}
	keepalive := d.cfg.PersistentKeepalive
	var cfg wgtypes.Config
	keyChanged := dev.PrivateKey != priv
	if keyChanged {
		cfg.PrivateKey = &priv
	}
	if dev.ListenPort != int(spec.Port) {
		port := int(spec.Port)
		cfg.ListenPort = &port
	}
	have := map[wgtypes.Key]wgtypes.Peer{}
	for _, p := range dev.Peers {
		have[p.PublicKey] = p
	}
	var kept []wgtypes.PeerConfig // existing peers, for the handshake trigger below
	for _, p := range spec.Peers {
		pub := wgtypes.Key(p.PublicKey)
		cur, exists := have[pub]
		delete(have, pub)
		if exists {
			kept = append(kept, wgtypes.PeerConfig{PublicKey: pub, UpdateOnly: true, PersistentKeepaliveInterval: ptr(time.Duration(0))})
		}
		if exists && !keyChanged && peerMatches(cur, p, keepalive) {
			continue
		}
		cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{
			PublicKey:                   pub,
			Endpoint:                    net.UDPAddrFromAddrPort(p.Endpoint),
			PersistentKeepaliveInterval: ptr(keepalive),
			ReplaceAllowedIPs:           true,
			AllowedIPs:                  ipNets(p.AllowedIPs),
		})
	}
	for pub := range have {
		cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: pub, Remove: true})
	}
	if cfg.PrivateKey == nil && cfg.ListenPort == nil && len(cfg.Peers) == 0 {
		return nil
	}
	if keyChanged && len(kept) > 0 {
		// The side whose key changes must initiate: remote peers keep their old
		// session until they re-handshake. Switching keepalive off and on makes
		// WireGuard send a keepalive at once, which starts a handshake
		// (wireguard-go device/uapi.go "pkaOn"; the kernel's set_peer does the same).
		if err := d.k.wg.ConfigureDevice(spec.Link, wgtypes.Config{Peers: kept}); err != nil {
			return fmt.Errorf("configure wireguard %s: %w", spec.Link, err)
		}
	}
	if err := d.k.wg.ConfigureDevice(spec.Link, cfg); err != nil {
		return fmt.Errorf("configure wireguard %s: %w", spec.Link, err)
	}
	// Log public keys only: the private key never reaches a log.
	d.changed(ctx, "Configured wireguard", "link", spec.Link, "keyChanged", keyChanged, "peersChanged", len(cfg.Peers))
	return nil
}

// peerMatches reports whether a device peer already has the planned settings.
func peerMatches(cur wgtypes.Peer, want wgPeerSpec, keepalive time.Duration) bool {
	if cur.Endpoint == nil || cur.Endpoint.AddrPort() != want.Endpoint && netip.AddrPortFrom(cur.Endpoint.AddrPort().Addr().Unmap(), cur.Endpoint.AddrPort().Port()) != want.Endpoint {
		return false
	}
	if cur.PersistentKeepaliveInterval != keepalive {
		return false
	}
	var got []netip.Prefix
	for _, n := range cur.AllowedIPs {
		if p, ok := prefixOf(&n); ok {
			got = append(got, p)
		}
	}
	slices.SortFunc(got, comparePrefix)
	return slices.Equal(got, want.AllowedIPs)
}

func ipNets(ps []netip.Prefix) []net.IPNet {
	out := make([]net.IPNet, 0, len(ps))
	for _, p := range ps {
		out = append(out, *ipNet(p))
	}
	return out
}

func ptr[T any](v T) *T { return &v }

// Stats reports every cable of the last applied State with what the kernel knows:
// WireGuard handshake time and byte counters per peer; VXLAN endpoints only. Nodes
// that are not the active gateway have no cables and get an empty list.
func (d *Dataplane) Stats(ctx context.Context) ([]CableStatus, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.last == nil {
		return nil, nil
	}
	var out []CableStatus
	for _, p := range d.last.VXPeers {
		out = append(out, CableStatus{ClusterID: p.ClusterID, Driver: DriverVXLAN, Device: d.cfg.vxLink(), Endpoint: p.Endpoint})
	}
	if wg := d.last.WG; wg != nil {
		dev, err := d.k.wg.Device(wg.Link)
		if err != nil {
			return nil, fmt.Errorf("read wireguard %s: %w", wg.Link, err)
		}
		peers := map[wgtypes.Key]wgtypes.Peer{}
		for _, p := range dev.Peers {
			peers[p.PublicKey] = p
		}
		for _, p := range wg.Peers {
			st := CableStatus{ClusterID: p.ClusterID, Driver: DriverWireGuard, Device: wg.Link, Endpoint: p.Endpoint, PublicKey: p.PublicKey}
			if cur, ok := peers[wgtypes.Key(p.PublicKey)]; ok {
				st.LastHandshake, st.RxBytes, st.TxBytes = cur.LastHandshakeTime, cur.ReceiveBytes, cur.TransmitBytes
				if cur.Endpoint != nil {
					ap := cur.Endpoint.AddrPort()
					st.Endpoint = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
				}
			}
			out = append(out, st)
		}
	}
	return out, nil
}

// wgLinks is the real wgLinker: the kernel module when it exists, otherwise an
// embedded wireguard-go device per link, served on its UAPI socket so wgctrl and
// wg(8) configure and read it like a kernel device.
type wgLinks struct {
	nl netlinkHandle

	mu   sync.Mutex
	devs map[string]*userspaceWG
	// ungated hands wireguard-go the bare TUN (tests measuring the cost the gate
	// removes; see sessionGate).
	ungated bool
}

type userspaceWG struct {
	dev *device.Device
	// tun is the device's TUN; its batch size is above 1 exactly when the kernel took
	// the virtio-net header, i.e. TSO/checksum offload and GRO on the TUN are on.
	tun  tun.Device
	uapi net.Listener
	done chan struct{}
	// gate is nil when ungated; stopGate ends its poller, gateDone waits for it.
	gate     *sessionGate
	stopGate chan struct{}
	gateDone sync.WaitGroup
}

func newWGLinks(nl netlinkHandle) *wgLinks {
	return &wgLinks{nl: nl, devs: map[string]*userspaceWG{}}
}

// Create makes a kernel WireGuard link, falling back to a userspace device when the
// kernel has no WireGuard module. The kernel decides: the module is there exactly when
// rtnetlink creates a link of kind "wireguard" (loading the module on demand where it
// is built but not loaded). Without it rtnetlink answers EOPNOTSUPP ("Unknown device
// type"), and only that error selects userspace: any other (a name taken, no
// CAP_NET_ADMIN) is returned, since a userspace device would fail the same way or hide
// a kernel link that exists.
func (w *wgLinks) Create(ctx context.Context, name string, mtu int) error {
	log := logr.FromContextOrDiscard(ctx)
	err := w.nl.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}})
	if err == nil {
		log.V(1).Info("Using kernel WireGuard", "link", name)
		return nil
	}
	if !kernelLacksWireGuard(err) {
		return fmt.Errorf("create kernel wireguard link %s: %w", name, err)
	}
	log.V(1).Info("Kernel WireGuard unavailable, using userspace wireguard-go", "link", name, "reason", err.Error())
	return w.createUserspace(ctx, name, mtu)
}

// kernelLacksWireGuard says whether adding a link of kind wireguard failed because the
// kernel has no such link kind.
func kernelLacksWireGuard(err error) bool { return errors.Is(err, unix.EOPNOTSUPP) }

func (w *wgLinks) createUserspace(ctx context.Context, name string, mtu int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.devs[name]; ok {
		return fmt.Errorf("userspace wireguard %s already running", name)
	}
	t, err := tun.CreateTUN(name, mtu)
	if err != nil {
		return fmt.Errorf("create tun: %w", err)
	}
	log := logr.FromContextOrDiscard(ctx).WithValues("link", name)
	logger := &device.Logger{
		Verbosef: func(format string, args ...any) { log.V(2).Info(fmt.Sprintf(format, args...)) },
		Errorf:   func(format string, args ...any) { log.V(1).Info(fmt.Sprintf(format, args...)) },
	}
	var in tun.Device = t
	var gate *sessionGate
	if !w.ungated {
		gate = newSessionGate(t)
		in = gate
	}
	dev := device.NewDevice(in, conn.NewDefaultBind(), logger)
	// The socket path is /var/run/wireguard/<name>.sock, shared by all network
	// namespaces of the host: a second device of the same name anywhere steals it.
	f, err := ipc.UAPIOpen(name)
	if err != nil {
		dev.Close()
		return fmt.Errorf("open uapi socket: %w", err)
	}
	l, err := ipc.UAPIListen(name, f)
	f.Close()
	if err != nil {
		dev.Close()
		return fmt.Errorf("listen on uapi socket: %w", err)
	}
	u := &userspaceWG{dev: dev, tun: t, uapi: l, done: make(chan struct{}), gate: gate, stopGate: make(chan struct{})}
	if gate != nil {
		keeper := newGateKeeper(gate, func(k device.NoisePublicKey) {
			if p := dev.LookupPeer(k); p != nil {
				p.FlushStagedPackets()
			}
		})
		u.gateDone.Add(1)
		go keeper.run(dev, u.stopGate, &u.gateDone)
	}
	log.V(1).Info("Started userspace WireGuard", "tunOffloads", u.offloads())
	go func() {
		defer close(u.done)
		for {
			c, err := l.Accept()
			if err != nil {
				return // listener closed (Remove) or socket deleted
			}
			go dev.IpcHandle(c)
		}
	}()
	w.devs[name] = u
	return nil
}

// Running reports whether this process runs a userspace device called name.
func (w *wgLinks) Running(name string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.devs[name]
	return ok
}

// Remove stops the userspace device or deletes the kernel link.
func (w *wgLinks) Remove(ctx context.Context, name string) error {
	w.mu.Lock()
	u, ok := w.devs[name]
	delete(w.devs, name)
	w.mu.Unlock()
	if ok {
		u.stop()
		return nil
	}
	l, err := w.nl.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := w.nl.LinkDel(l); err != nil && !isNotFound(err) {
		return err
	}
	return nil
}

// offloads says whether the TUN runs with the virtio-net header: segmentation and
// checksum offload on writes and GRO coalescing on reads, so wireguard-go moves up to
// 64 KiB per system call rather than one MTU-sized packet.
func (u *userspaceWG) offloads() bool { return u.tun.BatchSize() > 1 }

// stop closes the UAPI socket (removing its file) and the device (removing the TUN).
func (u *userspaceWG) stop() {
	u.uapi.Close()
	<-u.done
	close(u.stopGate)
	u.gateDone.Wait()
	u.dev.Close()
}

func (w *wgLinks) closeAll() error {
	w.mu.Lock()
	devs := w.devs
	w.devs = map[string]*userspaceWG{}
	w.mu.Unlock()
	for _, u := range devs {
		u.stop()
	}
	return nil
}
