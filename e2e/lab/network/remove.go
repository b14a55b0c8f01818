package network

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// RemoveNetns kills every process left in the namespaces, then deletes them. A
// namespace lives on while a process uses it, with its addresses and routes.
func RemoveNetns(ctx context.Context, names []string) error {
	if len(names) == 0 {
		return nil
	}
	type key struct{ dev, ino uint64 }
	want := map[key]bool{}
	for _, n := range names {
		var st unix.Stat_t
		if err := unix.Stat(Path(n), &st); err == nil {
			want[key{st.Dev, st.Ino}] = true
		}
	}
	ents, _ := os.ReadDir("/proc")
	var killed []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil {
			continue
		}
		if want[key{st.Dev, st.Ino}] {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			killed = append(killed, pid)
		}
	}
	// Wait for the kills to land so the namespaces really go away.
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range killed {
		for time.Now().Before(deadline) {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if err != nil || strings.Contains(string(b), ") Z ") {
				break // gone, or a zombie, which holds no namespace
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	var lines []string
	for _, n := range names {
		if _, err := os.Stat(Path(n)); err == nil {
			lines = append(lines, "netns del "+n)
		}
	}
	// -force keeps the batch going when one namespace fails.
	if len(lines) == 0 {
		return nil
	}
	if err := ipBatchForce(ctx, lines); err != nil {
		return fmt.Errorf("delete namespaces: %w", err)
	}
	return nil
}

func ipBatchForce(ctx context.Context, lines []string) error {
	return RunStdin(ctx, strings.Join(lines, "\n")+"\n", "ip", "-force", "-batch", "-")
}
