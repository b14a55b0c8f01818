package dataplane

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// addFails is a netlink handle whose LinkAdd answers err; nothing else is called.
type addFails struct {
	netlinkHandle
	err   error
	added []string
}

func (a *addFails) LinkAdd(l netlink.Link) error {
	a.added = append(a.added, l.Type()+" "+l.Attrs().Name)
	return a.err
}

// TestWireGuardSelection: a kernel that creates the link gets no userspace device; a
// kernel without the link kind (EOPNOTSUPP) gets one; any other refusal is an error
// and no userspace device, which would hide a kernel link or fail the same way.
func TestWireGuardSelection(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"kernel module present", nil},
		{"name taken", unix.EEXIST},
		{"not permitted", unix.EPERM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nl := &addFails{err: tc.err}
			w := newWGLinks(nl)
			err := w.Create(ctx, "mcnet-wgsel", 1420)
			if (err != nil) != (tc.err != nil) {
				t.Fatalf("Create: %v, want error %v", err, tc.err)
			}
			if len(nl.added) != 1 || nl.added[0] != "wireguard mcnet-wgsel" {
				t.Errorf("links added: %v, want one kernel wireguard link", nl.added)
			}
			if w.Running("mcnet-wgsel") {
				t.Error("a userspace device runs")
			}
		})
	}
	t.Run("no kernel module", func(t *testing.T) {
		requireRoot(t)
		inFreshNetns(t, func() {
			w := newWGLinks(&addFails{err: fmt.Errorf("wrapped: %w", unix.EOPNOTSUPP)})
			name := fmt.Sprintf("wgsel%d", os.Getpid()%100000) // the UAPI socket is host-global
			if err := w.Create(ctx, name, 1420); err != nil {
				t.Fatal(err)
			}
			defer w.closeAll()
			if !w.Running(name) {
				t.Fatal("no userspace device after EOPNOTSUPP")
			}
			if _, err := netlink.LinkByName(name); err != nil {
				t.Errorf("userspace device's TUN: %v", err)
			}
			w.mu.Lock()
			offloads := w.devs[name].offloads()
			w.mu.Unlock()
			if !offloads {
				t.Error("the userspace device's TUN runs without the virtio-net header: no TSO/GRO offloads")
			}
		})
	})
	// And this kernel: the real rtnetlink answer selects what the fallback expects.
	t.Run("this kernel", func(t *testing.T) {
		requireRoot(t)
		inFreshNetns(t, func() {
			err := netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: "wgprobe"}})
			switch {
			case err == nil:
				t.Log("this kernel has WireGuard: the kernel path is taken")
			case kernelLacksWireGuard(err):
				t.Logf("this kernel has no WireGuard (%v): the userspace path is taken", err)
			default:
				t.Fatalf("adding a wireguard link failed in a way that selects neither path: %v", err)
			}
		})
	})
}

// inFreshNetns runs f on a locked thread inside a new network namespace, then returns
// the thread to its namespace; the new one goes when its last reference does.
func inFreshNetns(t *testing.T, f func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	defer func() {
		if err := netns.Set(orig); err != nil {
			t.Fatalf("back to the original netns: %v", err)
		}
	}()
	f()
}
