package network

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Run executes a short command (ip, iptables, sysctl) and returns its error with the
// output attached, because a bare exit status says nothing about what was wrong.
func Run(ctx context.Context, name string, args ...string) error {
	_, err := Output(ctx, name, args...)
	return err
}

// Output is Run that also returns what the command printed.
func Output(ctx context.Context, name string, args ...string) (string, error) {
	var buf bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	if err := cmd.Run(); err != nil {
		return buf.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(buf.String()))
	}
	return buf.String(), nil
}

// IPBatch runs many ip commands in one process; bringing up a lab takes hundreds of
// them and a fork per command is most of the network setup time.
func IPBatch(ctx context.Context, netns string, lines []string) error {
	if len(lines) == 0 {
		return nil
	}
	args := []string{"-batch", "-"}
	if netns != "" {
		args = []string{"-n", netns, "-batch", "-"}
	}
	var buf bytes.Buffer
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip -n %s -batch: %w: %s", netns, err, strings.TrimSpace(buf.String()))
	}
	return nil
}

// Sysctls writes sysctls inside a namespace. /proc/sys/net is per network namespace,
// so writing through `ip netns exec` changes only the lab's copy.
func Sysctls(ctx context.Context, netns string, kv ...string) error {
	args := []string{"netns", "exec", netns, "sysctl", "-q", "-w"}
	return Run(ctx, "ip", append(args, kv...)...)
}

// RunStdin is run with stdin.
func RunStdin(ctx context.Context, stdin, name string, args ...string) error {
	var buf bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(buf.String()))
	}
	return nil
}
