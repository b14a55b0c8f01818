// Package node runs a real Kubernetes node inside one of the lab's network namespaces:
// Debian's containerd with runc and the standard CNI plugins, and the pinned kubelet.
// It is what kind does with a container per node, done with namespaces: every node has
// its own mount namespace (so /var/lib/kubelet, /var/lib/mcnet, /run/wireguard,
// /run/containerd, /run/netns and the CNI state are the node's own, as on a machine of
// its own), its own cgroup subtree (so a power-off can kill exactly its processes), its
// own containerd root, socket and CNI configuration, and its own kubelet root.
//
// Processes are started with nsenter rather than `ip netns exec`: the latter makes a new
// mount namespace and remounts /sys, which hides /sys/fs/cgroup from runc.
package node

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Config describes one node.
type Config struct {
	// Name is the Node object's name; Netns the network namespace (/run/netns/NAME)
	// the node lives in, already wired to its LAN.
	Name, Netns string
	// IP is the node's InternalIP; PodCIDR the node's slice of the cluster's pod CIDR,
	// which its CNI configuration hands out.
	IP      netip.Addr
	PodCIDR netip.Prefix
	// Dir holds the node's state: containerd's root, the directories bind-mounted over
	// /var/lib/kubelet and the others, configuration files. RunDir holds its sockets and
	// mount namespace; it must be short (socket paths are limited to 108 bytes) and on a
	// private mount.
	Dir, RunDir string
	// LogDir receives containerd.log, kubelet.log and, under pods/, the containers'
	// logs (the node's /var/log/pods).
	LogDir string
	// Cgroup is the name of the node's cgroup under every cgroup v1 hierarchy; the
	// kubelet's cgroupRoot and the home of containerd and the kubelet themselves.
	Cgroup string
	// Kubelet is the kubelet binary.
	Kubelet string
	// Kubeconfig is the kubelet's client kubeconfig (system:node:NAME); ClientCAFile
	// verifies clients of the kubelet's API; ServingCert and ServingKey are its serving
	// certificate (with the node's IP as a SAN, so the API server can verify it).
	Kubeconfig, ClientCAFile, ServingCert, ServingKey string
	// ClusterDNS and ClusterDomain go into pods' resolv.conf.
	ClusterDNS    []netip.Addr
	ClusterDomain string
	// Labels are registered by the kubelet on its Node.
	Labels map[string]string
	// SandboxImage is containerd's pause image.
	SandboxImage string
	// Mirrors maps registry hosts (docker.io, registry.k8s.io, 127.0.0.1:5000) to the
	// endpoints containerd pulls them from, e.g. http://127.0.0.1:5000.
	Mirrors map[string]string
	// Images are archives loaded into containerd (CRI namespace k8s.io) before the
	// kubelet first starts, as a node image's preloaded images are.
	Images []string
}

// Node is a running node. Its methods are safe for concurrent use.
type Node struct {
	cfg Config

	mu        sync.Mutex
	procs     map[string]*exec.Cmd // "containerd", "kubelet"
	done      map[string]chan struct{}
	mountNS   string
	imported  bool
	poweredOn bool
	stopped   bool
}

// Components are the node's own processes, in start order.
var Components = []string{"containerd", "kubelet"}

// binds are the paths made the node's own in its mount namespace, each backed by a
// directory under Dir/fs.
var binds = []string{
	"/var/lib/kubelet",
	"/var/lib/mcnet",
	"/var/lib/cni",
	"/var/log/pods",
	"/var/log/containers",
	"/run/containerd",
	"/run/netns",
	"/run/wireguard",
	"/etc/cni/net.d",
}

// requiredBinaries are what a node needs from the host, with the Debian package of each.
var requiredBinaries = map[string]string{
	"containerd":                     "containerd",
	"containerd-shim-runc-v2":        "containerd",
	"ctr":                            "containerd",
	"runc":                           "runc",
	"/usr/lib/cni/ptp":               "containernetworking-plugins",
	"/usr/lib/cni/host-local":        "containernetworking-plugins",
	"/usr/lib/cni/loopback":          "containernetworking-plugins",
	"/usr/lib/cni/portmap":           "containernetworking-plugins",
	"nsenter":                        "util-linux",
	"unshare":                        "util-linux",
	"conntrack":                      "conntrack",
	"iptables":                       "iptables",
	"/usr/sbin/iptables-legacy":      "iptables",
	"/usr/sbin/ip6tables-restore":    "iptables",
	"/usr/sbin/iptables-nft-save":    "iptables",
	"/usr/sbin/iptables-nft":         "iptables",
	"/usr/sbin/iptables-restore":     "iptables",
	"/usr/sbin/ip6tables":            "iptables",
	"/usr/sbin/iptables-save":        "iptables",
	"/usr/sbin/ip6tables-save":       "iptables",
	"/usr/sbin/iptables-nft-restore": "iptables",
}

// CheckHost reports every host binary a node needs that is missing, naming the Debian
// package that provides it, so a fresh machine gets one clear message.
func CheckHost() error {
	missing := map[string][]string{}
	for bin, pkg := range requiredBinaries {
		var err error
		if strings.HasPrefix(bin, "/") {
			_, err = os.Stat(bin)
		} else {
			_, err = exec.LookPath(bin)
		}
		if err != nil {
			missing[pkg] = append(missing[pkg], filepath.Base(bin))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	var pkgs, lines []string
	for pkg, bins := range missing {
		sort.Strings(bins)
		pkgs = append(pkgs, pkg)
		lines = append(lines, fmt.Sprintf("%s (%s)", pkg, strings.Join(bins, ", ")))
	}
	sort.Strings(pkgs)
	sort.Strings(lines)
	return fmt.Errorf("lab nodes need Debian packages that are not installed: %s; install them with: apt-get install %s",
		strings.Join(lines, "; "), strings.Join(pkgs, " "))
}

// Start prepares the node (mount namespace, cgroups, configuration) and starts
// containerd and the kubelet. It returns once containerd answers; the kubelet
// registers its Node on its own (wait for it with the API).
func Start(ctx context.Context, cfg Config) (*Node, error) {
	n := &Node{cfg: cfg, procs: map[string]*exec.Cmd{}, done: map[string]chan struct{}{}}
	if err := n.prepare(ctx); err != nil {
		return n, fmt.Errorf("node %s: %w", cfg.Name, err)
	}
	if err := n.PowerOn(ctx); err != nil {
		return n, err
	}
	return n, nil
}

// Name is the node's name.
func (n *Node) Name() string { return n.cfg.Name }

// Socket is containerd's socket.
func (n *Node) Socket() string { return filepath.Join(n.cfg.RunDir, "containerd.sock") }

// MountNamespace is the file holding the node's mount namespace (for nsenter --mount).
func (n *Node) MountNamespace() string { return n.mountNS }

func (n *Node) path(elem ...string) string {
	return filepath.Join(append([]string{n.cfg.Dir}, elem...)...)
}

// prepare creates the directories, the mount namespace with the node's own view of the
// bound paths, the cgroups and the configuration files.
func (n *Node) prepare(ctx context.Context) error {
	for _, d := range []string{n.cfg.RunDir, n.cfg.LogDir, n.path("containerd"), n.path("cni-ipam")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	var script strings.Builder
	script.WriteString("set -e\n")
	for _, b := range binds {
		src := n.path("fs", strings.ReplaceAll(strings.TrimPrefix(b, "/"), "/", "-"))
		if b == "/var/log/pods" {
			// Containers' logs live with the node's other logs, so a failed test that
			// keeps its logs keeps them too.
			src = filepath.Join(n.cfg.LogDir, "pods")
		}
		if err := os.MkdirAll(src, 0o755); err != nil {
			return err
		}
		// The mount point must exist on the host's filesystem; it stays there, empty,
		// because removing it could detach the mounts of another lab running now.
		if err := os.MkdirAll(b, 0o755); err != nil {
			return err
		}
		fmt.Fprintf(&script, "mount --bind %s %s\n", src, b)
	}
	// iptables serialises on /run/xtables.lock; each node has its own, as each machine
	// would, so one node's kube-proxy does not wait on another's.
	lock := n.path("fs", "xtables.lock")
	if err := os.WriteFile(lock, nil, 0o600); err != nil {
		return err
	}
	if _, err := os.Stat("/run/xtables.lock"); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile("/run/xtables.lock", nil, 0o600); err != nil {
			return err
		}
	}
	fmt.Fprintf(&script, "mount --bind %s /run/xtables.lock\n", lock)

	n.mountNS = filepath.Join(n.cfg.RunDir, "mnt")
	if err := os.WriteFile(n.mountNS, nil, 0o600); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "unshare", "--mount="+n.mountNS, "--propagation", "private", "sh", "-c", script.String()).CombinedOutput(); err != nil {
		return fmt.Errorf("mount namespace: %w: %s", err, strings.TrimSpace(string(out)))
	}
	if err := makeCgroups(n.cfg.Cgroup); err != nil {
		return err
	}
	return n.writeConfig()
}

// PowerOn starts containerd and then the kubelet (after a power-off, again).
func (n *Node) PowerOn(ctx context.Context) error {
	n.mu.Lock()
	if n.stopped {
		n.mu.Unlock()
		return fmt.Errorf("node %s is stopped", n.cfg.Name)
	}
	n.poweredOn = true
	n.mu.Unlock()
	if err := n.StartComponent(ctx, "containerd"); err != nil {
		return err
	}
	if !n.imported {
		if err := n.importImages(ctx); err != nil {
			return err
		}
		n.imported = true
	}
	return n.StartComponent(ctx, "kubelet")
}

// StartComponent starts containerd or the kubelet if it does not run; for containerd
// it waits until the socket answers.
func (n *Node) StartComponent(ctx context.Context, name string) error {
	var argv []string
	switch name {
	case "containerd":
		argv = []string{"containerd", "--config", n.path("containerd.toml")}
	case "kubelet":
		argv = []string{n.cfg.Kubelet,
			"--config=" + n.path("kubelet.yaml"),
			"--kubeconfig=" + n.cfg.Kubeconfig,
			"--hostname-override=" + n.cfg.Name,
			"--node-ip=" + n.cfg.IP.String(),
			"--node-labels=" + labelList(n.cfg.Labels),
			"--v=1",
		}
	default:
		return fmt.Errorf("node %s: no component %q", n.cfg.Name, name)
	}
	n.mu.Lock()
	if d, ok := n.done[name]; ok {
		select {
		case <-d:
		default:
			n.mu.Unlock()
			return nil // already running
		}
	}
	cmd, done, err := n.spawn(name, argv)
	if err != nil {
		n.mu.Unlock()
		return fmt.Errorf("node %s: start %s: %w", n.cfg.Name, name, err)
	}
	n.procs[name], n.done[name] = cmd, done
	n.mu.Unlock()
	if name != "containerd" {
		return nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if out, err := exec.CommandContext(ctx, "ctr", "--address", n.Socket(), "version").CombinedOutput(); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("node %s: containerd does not answer on %s: %s", n.cfg.Name, n.Socket(), strings.TrimSpace(string(out)))
		}
		select {
		case <-done:
			return fmt.Errorf("node %s: containerd exited (see %s)", n.cfg.Name, filepath.Join(n.cfg.LogDir, "containerd.log"))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// spawn starts argv in the node's network and mount namespaces, inside the node's
// "system" cgroup: a shell joins the cgroups and then execs nsenter, which execs the
// program, so the recorded PID is the program's and everything it forks (containerd's
// shims) is in the node's cgroup from the start.
func (n *Node) spawn(name string, argv []string) (*exec.Cmd, chan struct{}, error) {
	logPath := filepath.Join(n.cfg.LogDir, name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== %s start: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(argv, " "))
	var join strings.Builder
	for _, h := range hierarchies() {
		fmt.Fprintf(&join, "echo $$ > %s\n", filepath.Join(h, n.cfg.Cgroup, "system", "cgroup.procs"))
	}
	script := "set -e\n" + join.String() + `exec nsenter --net="$0" --mount="$1" -- "${@:2}"`
	cmd := exec.Command("bash", append([]string{"-c", script, "/run/netns/" + n.cfg.Netns, n.mountNS}, argv...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	return cmd, done, nil
}

// Kill sends SIGKILL to one of the node's own components (containerd or kubelet), as a
// crash would; containers keep running, as they do when a real containerd dies.
func (n *Node) Kill(name string) error {
	n.mu.Lock()
	cmd, done := n.procs[name], n.done[name]
	n.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("node %s: %s never started", n.cfg.Name, name)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
	return nil
}

// Running reports whether the named component runs.
func (n *Node) Running(name string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	d, ok := n.done[name]
	if !ok {
		return false
	}
	select {
	case <-d:
		return false
	default:
		return true
	}
}

// PowerOff kills every process of the node at once, containers included, as a power
// loss would. The mount namespace and the node's files stay, as a disk does.
func (n *Node) PowerOff(ctx context.Context) error {
	n.mu.Lock()
	n.poweredOn = false
	n.mu.Unlock()
	return killCgroup(ctx, n.cfg.Cgroup)
}

// PoweredOn reports whether the node is on.
func (n *Node) PoweredOn() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.poweredOn
}

// Stop kills everything of the node and removes its mount namespace and cgroups; the
// mounts inside the namespace (overlay snapshots, pod network namespaces, volumes) go
// with it. Dir is left to the caller. Safe to call more than once.
func (n *Node) Stop(ctx context.Context) error {
	n.mu.Lock()
	if n.stopped {
		n.mu.Unlock()
		return nil
	}
	n.stopped = true
	n.mu.Unlock()
	// Stop the kubelet first, so it does not restart what is being killed.
	_ = n.Kill("kubelet")
	errs := []error{killCgroup(ctx, n.cfg.Cgroup)}
	if n.mountNS != "" {
		errs = append(errs, Unmount(n.mountNS))
	}
	errs = append(errs, removeCgroups(n.cfg.Cgroup))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stop node %s: %w", n.cfg.Name, err)
	}
	return nil
}

// Unmount detaches a bind-mounted namespace file (ignoring one that is not mounted)
// and removes it.
func Unmount(path string) error {
	if err := syscall.Unmount(path, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func labelList(m map[string]string) string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

// TaskPID returns the host PID of a running container's main process, asked of the
// node's containerd (the CRI namespace k8s.io).
func (n *Node) TaskPID(ctx context.Context, containerID string) (int, error) {
	tasks, err := n.Tasks(ctx)
	if err != nil {
		return 0, err
	}
	pid, ok := tasks[containerID]
	if !ok {
		return 0, fmt.Errorf("node %s: no running task for container %.12s", n.cfg.Name, containerID)
	}
	return pid, nil
}

// Tasks maps the ID of every running container on the node to the host PID of its main
// process, from one `ctr tasks list`.
func (n *Node) Tasks(ctx context.Context) (map[string]int, error) {
	out, err := exec.CommandContext(ctx, "ctr", "--address", n.Socket(), "--namespace", "k8s.io", "tasks", "list").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("node %s: list tasks: %w: %s", n.cfg.Name, err, strings.TrimSpace(string(out)))
	}
	tasks := map[string]int{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[2] != "RUNNING" {
			continue
		}
		var pid int
		if _, err := fmt.Sscan(f[1], &pid); err == nil && pid > 0 {
			tasks[f[0]] = pid
		}
	}
	return tasks, nil
}

// PIDs lists every process of the node: containerd, the kubelet, shims, containers.
func (n *Node) PIDs() []int { return pids(n.cfg.Cgroup) }

// importImages loads the configured archives into containerd.
func (n *Node) importImages(ctx context.Context) error {
	for _, a := range n.cfg.Images {
		out, err := exec.CommandContext(ctx, "ctr", "--address", n.Socket(), "--namespace", "k8s.io", "images", "import", a).CombinedOutput()
		if err != nil {
			return fmt.Errorf("node %s: import %s: %w: %s", n.cfg.Name, filepath.Base(a), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}
