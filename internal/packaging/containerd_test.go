package packaging

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mcnet-io/mcnet/internal/registry"
)

// TestContainerdRunsTheImages builds the lab images (LabImages), serves them from internal/registry
// on loopback, and has a throwaway containerd (its own root, state, socket and
// namespace; no CRI) pull them — mcnet's directly over plain HTTP, the others through
// hosts.toml mirrors for docker.io and registry.k8s.io, as the lab's nodes do — and run
// them with runc:
//   - mcnet's image as root and privileged (as the gateway runs): iptables-legacy,
//     iptables-nft and the iptables wrapper list the rules of the container's network
//     namespace;
//   - mcnet's image as the image says: the process is uid 65532, and iptables is refused;
//   - alpine/socat and nicolaka/netshoot: the tools and shell idioms the MCS conformance
//     suite runs in them;
//   - the pause image: it runs until SIGTERM and exits 0.
//
// It runs as root (CI runs as root: under CI=true it fails instead of skipping) and
// removes every process, mount, cgroup and directory it made, also when it fails.
func TestContainerdRunsTheImages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the images and runs containerd")
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("runs containerd and runc: must run as root (CI=true)")
		}
		t.Skip("runs containerd and runc: needs root")
	}
	for tool, pkg := range map[string]string{"containerd": "containerd", "ctr": "containerd", "runc": "runc", "containerd-shim-runc-v2": "containerd"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not found: install the Debian package %s", tool, pkg)
			}
			t.Skipf("%s not found: install the Debian package %s", tool, pkg)
		}
	}
	// End in time for the cleanups: a test killed by -timeout runs none.
	ctx := t.Context()
	if d, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-time.Minute))
		defer cancel()
	}
	sweepStaleContainerd(t)
	root := repoRoot(t)
	// What the lab builds, but into a directory of this test's own: the lab suites run
	// beside this package under `make test`, and their registries serve bin/images.
	version, commit := gitVersion(ctx, root)
	images, err := BuildImages(ctx, ImagesOptions{
		Root:     root,
		OutDir:   t.TempDir(),
		CacheDir: filepath.Join(root, "bin", "debian"),
		Version:  version,
		Commit:   commit,
	})
	if err != nil {
		t.Fatalf("BuildImages: %v", err)
	}
	byName := map[string]LabImage{}
	var served []registry.Image
	for _, img := range images {
		byName[img.Name] = img
		served = append(served, registry.Image{Layout: img.Layout, Refs: img.Refs})
	}
	reg, err := registry.New(served...)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	regCtx, stopReg := context.WithCancel(context.Background())
	regDone := make(chan error, 1)
	go func() { regDone <- reg.Serve(regCtx, ln) }()
	t.Cleanup(func() { stopReg(); <-regDone })
	addr := ln.Addr().String()

	c := startContainerd(t, addr)

	mcnet := byName["mcnet"].Refs[0]
	direct := addr + "/" + strings.SplitN(mcnet, "/", 2)[1]
	c.ctr(t, "images", "pull", "--plain-http", direct)
	for _, ref := range []string{SocatRef, NetshootRef, SandboxRef} {
		c.ctr(t, "images", "pull", "--hosts-dir", c.hostsDir, ref)
	}

	t.Run("ctr images import", func(t *testing.T) {
		// The archives import under every name they hold (the way the lab first loaded
		// images, and what `ctr -n k8s.io images import` users do).
		pause := byName["pause"]
		c.ctr(t, "images", "import", "--all-platforms", pause.Archive)
		listed := strings.Fields(c.ctr(t, "images", "ls", "-q"))
		for _, ref := range pause.Refs {
			if !slices.Contains(listed, ref) {
				t.Errorf("after importing %s: no image %s (have %v)", pause.Archive, ref, listed)
			}
		}
	})

	t.Run("mcnet as root, privileged", func(t *testing.T) {
		// The image has no program that stays; mount mcnet's pause binary to hold the
		// container while commands run in it as root, as the gateway's runAsUser: 0 does.
		pause := filepath.Join(c.dir, "pause") // ctr's --mount takes no commas in paths
		build := exec.CommandContext(ctx, "go", "build", "-o", pause, "./internal/imagecmd/pause")
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build pause: %v\n%s", err, out)
		}
		id := c.name("root")
		c.ctr(t, "run", "--detach", "--privileged", "--mount", "type=bind,src="+pause+",dst=/pause,options=rbind:ro", direct, id, "/pause")
		for _, cmd := range [][]string{
			{"/usr/sbin/iptables-legacy", "-L", "-n"},
			{"/usr/sbin/iptables-nft", "-L", "-n"},
			{"/usr/sbin/ip6tables-legacy-save"},
			{"/usr/sbin/ip6tables-nft-save"},
			{"/usr/sbin/iptables-wrapper", "mode"},
			{"/usr/sbin/iptables", "-L", "-n"},
			{"/usr/sbin/ip6tables", "-L", "-n"},
			{"/usr/sbin/iptables", "--version"},
		} {
			out, err := c.command(ctx, append([]string{"tasks", "exec", "--exec-id", c.name("exec"), "--user", "0", id}, cmd...)...).CombinedOutput()
			if err != nil {
				t.Errorf("%s: %v\n%s", strings.Join(cmd, " "), err, out)
				continue
			}
			want := "Chain INPUT (policy ACCEPT)"
			switch {
			case strings.HasSuffix(cmd[0], "-save"):
				want = "" // an empty namespace may have no tables at all
			case cmd[len(cmd)-1] == "mode":
				want = "nft" // a new network namespace has no rules in either: nft
			case cmd[len(cmd)-1] == "--version":
				want = "iptables v1.8"
			}
			if !strings.Contains(string(out), want) {
				t.Errorf("%s printed %q, want %q", strings.Join(cmd, " "), out, want)
			}
		}
	})

	t.Run("mcnet as the image's user", func(t *testing.T) {
		id := c.name("user")
		c.ctr(t, "containers", "create", direct, id, "/mcnet-controller")
		defer c.ctr(t, "containers", "delete", id)
		var info struct {
			Spec struct {
				Process struct {
					User struct{ UID, GID int }
				}
			}
		}
		if err := json.Unmarshal([]byte(c.ctr(t, "containers", "info", id)), &info); err != nil {
			t.Fatal(err)
		}
		if u := info.Spec.Process.User; u.UID != nonrootUID || u.GID != nonrootUID {
			t.Errorf("containerd runs the image as %d:%d, want %d:%d (image config User %s)", u.UID, u.GID, nonrootUID, nonrootUID, ImageUser)
		}
		out, err := c.run(t, direct, nil, "/usr/sbin/iptables-legacy", "-L", "-n")
		// Refused for want of root: the lock file, or the kernel if it got that far.
		if err == nil || !strings.Contains(out, "Permission denied") {
			t.Errorf("iptables as the image's user: %v %q, want it refused as non-root", err, out)
		}
	})

	t.Run("conformance tools", func(t *testing.T) {
		// What the conformance suite's socat pods and netshoot client run.
		script := `set -e
MY_POD_IPS="10.244.1.2"
echo "$MY_POD_IPS" | grep -qE '([^0-9]|^)[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}([^0-9]|$)'
first_ip=$(echo "$MY_POD_IPS" | tr ',' ' ' | awk '{print $1}')
test "$first_ip" = 10.244.1.2
socat -V 2>&1 | grep -q 'socat version'
nc -h 2>&1 | grep -q 'OpenBSD netcat'
nslookup -version 2>&1 | grep -q nslookup
dig -v 2>&1 | grep -q DiG
curl --version 2>&1 | grep -q '^curl'
iperf3 -v 2>&1 | grep -q '^iperf 3'
ip -V 2>&1 | grep -q iproute2
ping -V 2>&1 | grep -q iputils
httpd -p 127.0.0.1:8080 & pid=$!
for i in $(seq 50); do curl -fs http://127.0.0.1:8080/x && break; sleep 0.1; done | grep -q ' GET /x'
kill $pid
echo ok`
		for _, ref := range []string{SocatRef, NetshootRef} {
			out, err := c.run(t, ref, nil, "/bin/sh", "-c", script)
			if err != nil || !strings.HasSuffix(strings.TrimSpace(out), "ok") {
				t.Errorf("%s: %v\n%s", ref, err, out)
			}
		}
	})

	t.Run("pause", func(t *testing.T) {
		id := c.name("pause")
		run := c.command(context.Background(), "run", "--rm", SandboxRef, id)
		var out lockedBuffer
		run.Stdout, run.Stderr = &out, &out
		run.WaitDelay = 5 * time.Second
		if err := run.Start(); err != nil {
			t.Fatal(err)
		}
		var exited error
		done := make(chan struct{})
		go func() { exited = run.Wait(); close(done) }()
		defer func() {
			select {
			case <-done:
			default:
				_ = run.Process.Kill()
				<-done
			}
		}()
		// SIGTERM once pause says it catches it (earlier, the Go runtime is starting).
		deadline := time.Now().Add(30 * time.Second)
		for !taskRunning(c.ctr(t, "tasks", "ls"), id) || !strings.Contains(out.String(), "waiting for SIGTERM") {
			if time.Now().After(deadline) {
				t.Fatalf("pause task never ran: %s", out.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		c.ctr(t, "tasks", "kill", "--signal", "SIGTERM", id)
		select {
		case <-done:
			if exited != nil {
				t.Errorf("pause after SIGTERM: %v (%s), want exit status 0", exited, out.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatal("pause did not exit on SIGTERM")
		}
	})
}

// lockedBuffer is a buffer a command writes while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// taskRunning reports whether `ctr tasks ls` lists id as RUNNING.
func taskRunning(ls, id string) bool {
	for _, l := range strings.Split(ls, "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[0] == id && f[2] == "RUNNING" {
			return true
		}
	}
	return false
}

// containerd is a throwaway containerd and what it made.
type containerd struct {
	dir, sock, ns, hostsDir string
	cmd                     *exec.Cmd
	n                       int
}

// startContainerd starts containerd with everything under a new directory and registers
// its teardown: tasks and containers deleted, containerd stopped, leftover shims killed
// by PID, mounts under the directory detached, the namespace's cgroups and the directory
// removed.
func startContainerd(t *testing.T, registryAddr string) *containerd {
	t.Helper()
	dir, err := os.MkdirTemp("", "mcnet-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	c := &containerd{dir: dir, sock: filepath.Join(dir, "containerd.sock"), ns: fmt.Sprintf("mcnet-test-%d", os.Getpid()), hostsDir: filepath.Join(dir, "certs.d")}
	t.Cleanup(func() { c.teardown(t) })
	// Who owns the directory, for sweepStaleContainerd after a killed run.
	owner := fmt.Sprintf("%d %s\n", os.Getpid(), c.ns)
	if err := os.WriteFile(filepath.Join(dir, "owner"), []byte(owner), 0o644); err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[debug]
  address = %[5]q
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = %[6]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.sock, c.sock+".ttrpc", filepath.Join(dir, "debug.sock"), filepath.Join(dir, "opt"))
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	// Mirrors, the way the lab's nodes configure them (config_path hosts.toml).
	for host, upstream := range map[string]string{"docker.io": "https://registry-1.docker.io", "registry.k8s.io": "https://registry.k8s.io"} {
		hosts := fmt.Sprintf("server = %q\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", upstream, registryAddr)
		if err := os.MkdirAll(filepath.Join(c.hostsDir, host), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(c.hostsDir, host, "hosts.toml"), []byte(hosts), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command("containerd", "--config", cfg)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if err := c.command(t.Context(), "version").Run(); err == nil {
			return c
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "containerd.log"))
			t.Fatalf("containerd did not answer on %s:\n%s", c.sock, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sweepStaleContainerd tears down what a killed run of this test left behind: every
// mcnet-ctrd-* directory whose owning test process is gone.
func sweepStaleContainerd(t *testing.T) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "mcnet-ctrd-*"))
	for _, dir := range dirs {
		var pid int
		var ns string
		if data, err := os.ReadFile(filepath.Join(dir, "owner")); err == nil {
			if _, err := fmt.Sscan(string(data), &pid, &ns); err == nil && syscall.Kill(pid, 0) == nil {
				continue // a run in progress
			}
		}
		t.Logf("removing what a killed run left in %s", dir)
		stale := &containerd{dir: dir, sock: filepath.Join(dir, "containerd.sock"), ns: ns}
		for _, p := range processesMentioning(dir) {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		stale.teardown(t)
	}
}

func (c *containerd) command(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ctr", append([]string{"--address", c.sock, "--namespace", c.ns}, args...)...)
}

// ctr runs ctr and fails the test on an error.
func (c *containerd) ctr(t *testing.T, args ...string) string {
	t.Helper()
	out, err := c.command(t.Context(), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// name is a new container ID.
func (c *containerd) name(what string) string {
	c.n++
	return fmt.Sprintf("%s-%d", what, c.n)
}

// run runs args in a new container of ref and removes it; the error is the exit status.
func (c *containerd) run(t *testing.T, ref string, opts []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmdArgs := append(append([]string{"run", "--rm"}, opts...), ref, c.name("run"))
	out, err := c.command(ctx, append(cmdArgs, args...)...).CombinedOutput()
	return string(out), err
}

func (c *containerd) teardown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var errs []error
	if c.cmd != nil && c.cmd.Process != nil {
		if out, err := c.command(ctx, "tasks", "ls", "-q").Output(); err == nil {
			for _, id := range strings.Fields(string(out)) {
				_ = c.command(ctx, "tasks", "kill", "--signal", "SIGKILL", id).Run()
				for i := 0; i < 50 && c.command(ctx, "tasks", "delete", id).Run() != nil; i++ {
					time.Sleep(100 * time.Millisecond)
				}
			}
		}
		if out, err := c.command(ctx, "containers", "ls", "-q").Output(); err == nil {
			for _, id := range strings.Fields(string(out)) {
				_ = c.command(ctx, "containers", "delete", id).Run()
			}
		}
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = c.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = c.cmd.Process.Kill()
			<-done
		}
	}
	// Shims outlive containerd: find ours by the socket they were given.
	for _, pid := range processesMentioning(c.sock) {
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Kill()
		}
	}
	if err := detachMounts(c.dir); err != nil {
		errs = append(errs, err)
	}
	var cgroups []string
	if c.ns != "" {
		cgroups, _ = filepath.Glob("/sys/fs/cgroup/*/" + c.ns)
	}
	for _, cg := range cgroups {
		// cgroupfs directories go with rmdir only, children first.
		var sub []string
		_ = filepath.WalkDir(cg, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				sub = append(sub, p)
			}
			return nil
		})
		for i := len(sub) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(sub[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", sub[i], err))
			}
		}
	}
	if err := os.RemoveAll(c.dir); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		t.Errorf("containerd teardown: %v", err)
	}
}

// processesMentioning lists the processes whose command line contains s.
func processesMentioning(s string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte(s)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// detachMounts unmounts (lazily, deepest first) every mount at or under dir.
func detachMounts(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			mounts = append(mounts, fields[4])
		}
	}
	var errs []error
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := syscall.Unmount(mounts[i], syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mounts[i], err))
		}
	}
	return errors.Join(errs...)
}
