package dataplane

// A lab of network namespaces for the real-kernel tests and the benchmark:
//
//	poda ── gwa ══ wan ══ gwb ── podb        cluster a: gwa (gateway), nodea
//	         │                               cluster b: gwb (gateway)
//	       nodea ── podn
//
// Each node runs its dataplane in its own process (the test binary re-executed inside
// the namespace, as the gateway runs one process per node), driven over a pipe. That
// keeps wireguard-go's goroutines and netlink sockets in the right namespace without
// thread tricks. Everything is removed in Cleanup, even when the test fails.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/vishvananda/netns"
)

// requireRoot skips a kernel test when not root, unless CI demands it runs.
func requireRoot(tb testing.TB) {
	tb.Helper()
	var missing []string
	for _, tool := range []string{"ip", "iptables", "nft", "ping", "wg", "bridge"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	switch {
	case os.Geteuid() != 0 && os.Getenv("CI") == "true":
		tb.Fatal("real-kernel dataplane tests need root; CI runs them as root")
	case os.Geteuid() != 0:
		tb.Skip("real-kernel dataplane tests need root (CI=true makes this a failure)")
	case len(missing) > 0 && os.Getenv("CI") == "true":
		tb.Fatalf("missing tools: %v", missing)
	case len(missing) > 0:
		tb.Skipf("missing tools: %v", missing)
	}
}

var labSeq atomic.Int32

// lab addresses. 198.18.0.0/15 is the benchmarking range: it never collides with the
// host's own network.
var (
	wanA    = netip.MustParseAddr("198.18.0.1")
	wanB    = netip.MustParseAddr("198.18.0.2")
	lanGw   = netip.MustParseAddr("198.18.1.1")
	lanNode = netip.MustParseAddr("198.18.1.2")
	podA    = netip.MustParseAddr("10.1.0.2")
	podN    = netip.MustParseAddr("10.1.1.2")
	podB    = netip.MustParseAddr("10.2.0.2")
)

type lab struct {
	tb     testing.TB
	id     string            // unique per lab: "<pid>-<seq>"
	ns     map[string]string // role -> namespace name
	nodes  map[string]*node  // role -> dataplane process
	prefix map[string]string // role -> link prefix
}

// newLab builds the namespaces, veths and the stand-in for the CNI (static routes in
// the main tables) and registers their removal.
func newLab(tb testing.TB) *lab {
	tb.Helper()
	l := newNamespaces(tb, "gwa", "gwb", "nodea", "poda", "podb", "podn")
	l.veth("gwa", "wan0", wanA.String()+"/24", "gwb", "wan0", wanB.String()+"/24")
	l.veth("gwa", "lan0", lanGw.String()+"/24", "nodea", "lan0", lanNode.String()+"/24")
	l.veth("gwa", "pod0", "10.1.0.1/24", "poda", "eth0", podA.String()+"/24")
	l.veth("nodea", "pod0", "10.1.1.1/24", "podn", "eth0", podN.String()+"/24")
	l.veth("gwb", "pod0", "10.2.0.1/24", "podb", "eth0", podB.String()+"/24")
	l.ip("poda", "route", "add", "default", "via", "10.1.0.1")
	l.ip("podn", "route", "add", "default", "via", "10.1.1.1")
	l.ip("podb", "route", "add", "default", "via", "10.2.0.1")
	// The "CNI": the gateway reaches the other node's pods through the cluster network.
	l.ip("gwa", "route", "add", "10.1.1.0/24", "via", "198.18.1.2")
	l.ip("nodea", "route", "add", "10.1.0.0/24", "via", lanGw.String())
	for _, role := range []string{"gwa", "gwb", "nodea"} {
		// Strict reverse-path filtering and no forwarding: the dataplane must fix
		// both where it needs them.
		l.sysctl(role, "net.ipv4.conf.all.rp_filter", "1")
		l.sysctl(role, "net.ipv4.ip_forward", "0")
	}
	return l
}

// newNamespaces makes one namespace per role (loopback up, nothing else) and
// registers their removal before creating any, so a failure half-way leaks nothing.
// A role's link prefix ends with the role's first letter.
func newNamespaces(tb testing.TB, roles ...string) *lab {
	tb.Helper()
	seq := labSeq.Add(1)
	l := &lab{tb: tb, id: fmt.Sprintf("%d-%d", os.Getpid(), seq), ns: map[string]string{}, nodes: map[string]*node{}, prefix: map[string]string{}}
	for _, role := range roles {
		l.ns[role] = "mcnt-" + l.id + "-" + role
		// Userspace WireGuard sockets are host-global: unique link names per node.
		letter := map[string]string{"gwa": "g", "gwb": "h", "nodea": "n"}[role]
		if letter == "" {
			letter = role[:1]
		}
		l.prefix[role] = fmt.Sprintf("t%d%d%s", os.Getpid()%100000, seq%10, letter)
	}
	tb.Cleanup(l.destroy)
	for _, role := range roles {
		l.run("ip", "netns", "add", l.ns[role])
		l.ip(role, "link", "set", "lo", "up")
	}
	return l
}

func (l *lab) veth(roleA, nameA, addrA, roleB, nameB, addrB string) {
	l.run("ip", "link", "add", nameA, "netns", l.ns[roleA], "type", "veth", "peer", "name", nameB, "netns", l.ns[roleB])
	l.ip(roleA, "addr", "add", addrA, "dev", nameA)
	l.ip(roleB, "addr", "add", addrB, "dev", nameB)
	l.ip(roleA, "link", "set", nameA, "up")
	l.ip(roleB, "link", "set", nameB, "up")
}

func (l *lab) sysctl(role, key, value string) {
	l.exec(role, "sysctl", "-q", "-w", key+"="+value)
}

func (l *lab) ip(role string, args ...string) string {
	return l.run("ip", append([]string{"-n", l.ns[role]}, args...)...)
}

// exec runs a command inside role's namespace and fails the test on error.
func (l *lab) exec(role string, args ...string) string {
	return l.run("ip", append([]string{"netns", "exec", l.ns[role]}, args...)...)
}

// try runs a command inside role's namespace and returns its error.
func (l *lab) try(role string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", l.ns[role]}, args...)...).CombinedOutput()
	return string(out), err
}

func (l *lab) run(name string, args ...string) string {
	l.tb.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		l.tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// destroy stops the node processes and deletes the namespaces (and with them every
// link, route and rule in them). It never touches the host namespace.
func (l *lab) destroy() {
	for _, n := range l.nodes {
		n.stop()
		if l.tb.Failed() {
			l.tb.Logf("node %s log:\n%s", n.role, n.stderr.String())
		}
	}
	for _, ns := range l.ns {
		_ = exec.Command("ip", "netns", "del", ns).Run()
	}
}

// inNS runs fn on a thread switched into role's namespace; sockets created there
// stay in that namespace after the thread switches back.
func (l *lab) inNS(role string, fn func()) {
	l.tb.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		l.tb.Fatal(err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(l.ns[role])
	if err != nil {
		l.tb.Fatal(err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		l.tb.Fatal(err)
	}
	defer func() {
		// A thread that cannot switch back must die with its goroutine: stay locked.
		if err := netns.Set(orig); err == nil {
			runtime.UnlockOSThread()
		}
	}()
	fn()
}

// states returns the desired State of every dataplane node for one driver.
func (l *lab) states(driver Driver, keyA, keyB Key) map[string]State {
	cidrsA := prefixes("10.1.0.0/16", "10.101.0.0/16")
	cidrsB := prefixes("10.2.0.0/16", "10.102.0.0/16")
	remoteB := Remote{ClusterID: "b", CIDRs: cidrsB, Cable: Cable{Driver: driver, Endpoints: []netip.Addr{wanB}, PublicKey: keyB}}
	remoteA := Remote{ClusterID: "a", CIDRs: cidrsA, Cable: Cable{Driver: driver, Endpoints: []netip.Addr{wanA}, PublicKey: keyA}}
	if driver != DriverWireGuard {
		remoteA.Cable.PublicKey, remoteB.Cable.PublicKey = Key{}, Key{}
	}
	return map[string]State{
		"gwa":   {ClusterID: "a", LocalCIDRs: cidrsA, Remotes: []Remote{remoteB}, Gateway: &Gateway{ClusterNodes: []netip.Addr{lanGw, lanNode}}},
		"nodea": {ClusterID: "a", LocalCIDRs: cidrsA, Remotes: []Remote{remoteB}, ActiveGateway: lanGw},
		"gwb":   {ClusterID: "b", LocalCIDRs: cidrsB, Remotes: []Remote{remoteA}, Gateway: &Gateway{}},
	}
}

// startNodes starts a dataplane process in each node namespace.
func (l *lab) startNodes() {
	l.tb.Helper()
	for _, role := range []string{"gwa", "gwb", "nodea"} {
		l.nodes[role] = l.startNode(role)
	}
}

// node is a dataplane process in a namespace, driven by JSON lines.
type node struct {
	role   string
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr *lockedBuffer
	mu     sync.Mutex
}

type helperConfig struct {
	LinkPrefix string
	StateDir   string
	KeyFile    string // default <StateDir>/wireguard.key
	// UngatedWireGuard runs userspace WireGuard without its session gate.
	UngatedWireGuard bool
}

type helperRequest struct {
	Op    string `json:"op"`
	State State  `json:"state"`
}

type helperReply struct {
	Err     string `json:"err,omitempty"`
	Changes int    `json:"changes"`
	// Writes are the kernel writes the counting seams saw during the op, and
	// Generation the nftables ruleset generation after it.
	Writes     []string      `json:"writes,omitempty"`
	Generation uint32        `json:"generation"`
	Key        Key           `json:"key,omitzero"`
	Stats      []CableStatus `json:"stats,omitempty"`
	// HeapBytes (live heap after a GC) and RSSBytes answer "mem".
	HeapBytes uint64 `json:"heapBytes,omitempty"`
	RSSBytes  uint64 `json:"rssBytes,omitempty"`
	// Held answers "held": the userspace WireGuard peers the session gate holds.
	Held  int         `json:"held,omitempty"`
	Remap []PrefixMap `json:"remap,omitempty"`
}

func (l *lab) startNode(role string) *node {
	l.tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		l.tb.Fatal(err)
	}
	return l.startHelper(role, exe, helperConfig{LinkPrefix: l.prefix[role], StateDir: l.tb.TempDir()})
}

// startHelper starts a dataplane process of the test binary exe (this one, or one
// built from another revision for the benchmark) inside role's namespace.
func (l *lab) startHelper(role, exe string, hc helperConfig) *node {
	l.tb.Helper()
	cfg, _ := json.Marshal(hc)
	cmd := exec.Command("ip", "netns", "exec", l.ns[role], exe, "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "MCNET_DATAPLANE_HELPER="+string(cfg))
	n := &node{role: role, cmd: cmd, stderr: &lockedBuffer{}}
	l.tb.Cleanup(n.stop) // also when the test fails before destroy
	cmd.Stderr = n.stderr
	// Replies come on fd 3 so the testing package's own stdout cannot interfere.
	r, w, err := os.Pipe()
	if err != nil {
		l.tb.Fatal(err)
	}
	cmd.ExtraFiles = []*os.File{w}
	if n.in, err = cmd.StdinPipe(); err != nil {
		l.tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		l.tb.Fatal(err)
	}
	w.Close()
	n.out = bufio.NewReader(r)
	return n
}

// call sends one request and waits for its reply.
func (n *node) call(req helperRequest) (helperReply, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	b, _ := json.Marshal(req)
	if _, err := n.in.Write(append(b, '\n')); err != nil {
		return helperReply{}, fmt.Errorf("node %s: send %s: %w", n.role, req.Op, err)
	}
	line, err := n.out.ReadBytes('\n')
	if err != nil {
		return helperReply{}, fmt.Errorf("node %s: read %s reply: %w\n%s", n.role, req.Op, err, n.stderr.String())
	}
	var rep helperReply
	if err := json.Unmarshal(line, &rep); err != nil {
		return helperReply{}, fmt.Errorf("node %s: %w: %s", n.role, err, line)
	}
	if rep.Err != "" {
		return rep, fmt.Errorf("node %s: %s: %s", n.role, req.Op, rep.Err)
	}
	return rep, nil
}

func (n *node) stop() {
	if n.cmd.Process == nil || n.cmd.ProcessState != nil {
		return
	}
	n.in.Close() // EOF: the helper closes its dataplane and exits
	done := make(chan struct{})
	go func() { n.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		n.cmd.Process.Kill()
		<-done
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestHelperProcess is not a test: it is the dataplane process of one lab node,
// started by startNode inside a namespace.
func TestHelperProcess(t *testing.T) {
	raw := os.Getenv("MCNET_DATAPLANE_HELPER")
	if raw == "" {
		t.Skip("helper process for the real-kernel tests")
	}
	os.Exit(helperMain(raw))
}

func helperMain(raw string) int {
	var hc helperConfig
	if err := json.Unmarshal([]byte(raw), &hc); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	log := funcr.New(func(prefix, args string) { fmt.Fprintln(os.Stderr, prefix, args) }, funcr.Options{Verbosity: 1})
	ctx := logr.NewContext(context.Background(), log)
	k, err := newKernel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	links, _ := k.wgLink.(*wgLinks)
	if links != nil {
		links.ungated = hc.UngatedWireGuard
	}
	var writes writeCounter
	dp, err := newDataplane(Config{LinkPrefix: hc.LinkPrefix, ChainPrefix: "MCNET", StateDir: hc.StateDir, KeyFile: hc.KeyFile}, counting(k, &writes))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer dp.Close()
	replies := os.NewFile(3, "replies")
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(nil, 1<<20)
	for in.Scan() {
		var req helperRequest
		var rep helperReply
		err := json.Unmarshal(in.Bytes(), &req)
		if err == nil {
			switch req.Op {
			case "apply":
				err = dp.Apply(ctx, req.State)
				rep.Changes = dp.changes
			case "cleanup":
				err = dp.Cleanup(ctx)
				rep.Changes = dp.changes
			case "gen": // nothing: every reply carries the nftables generation
			case "key":
				rep.Key, err = dp.PublicKey()
			case "stats":
				rep.Stats, err = dp.Stats(ctx)
			case "mem":
				rep.HeapBytes, rep.RSSBytes, err = memNow()
			case "held":
				rep.Held = links.heldPeers()
			case "remap":
				rep.Remap, err = dp.ReadRemap()
			default:
				err = errors.New("unknown op " + req.Op)
			}
		}
		if err != nil {
			rep.Err = err.Error()
		}
		rep.Writes = writes.take()
		if rep.Generation, err = nftGeneration(); err != nil {
			rep.Err += err.Error()
		}
		b, _ := json.Marshal(rep)
		if _, err := replies.Write(append(b, '\n')); err != nil {
			return 1
		}
	}
	return 0
}
