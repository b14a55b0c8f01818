// Command iptables-wrapper is installed in mcnet's image as iptables, ip6tables and their
// -save and -restore variants. It picks the backend the node uses (see
// internal/iptwrapper), links those names to it for the next calls, and runs the command
// it was called as. `iptables-wrapper mode` prints the mode it would choose.
package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/mcnet-io/mcnet/internal/iptwrapper"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "iptables-wrapper:", err)
		os.Exit(1)
	}
}

func run() error {
	// The backends sit beside the wrapper (/usr/sbin in mcnet's image).
	dir := "/usr/sbin"
	if exe, err := os.Executable(); err == nil {
		dir = filepath.Dir(exe)
	}
	ctx := context.Background()
	save := func(ctx context.Context, family string, mode iptwrapper.Mode, args ...string) (string, error) {
		bin, argv0, err := iptwrapper.Target(family+"-save", mode)
		if err != nil {
			return "", err
		}
		cmd := exec.CommandContext(ctx, filepath.Join(dir, bin), args...)
		cmd.Args[0] = argv0
		var out bytes.Buffer
		cmd.Stdout = &out
		err = cmd.Run()
		return out.String(), err
	}
	mode, err := iptwrapper.Detect(ctx, os.Getenv, save)
	if err != nil {
		return err
	}
	name := filepath.Base(os.Args[0])
	if name == "iptables-wrapper" {
		if len(os.Args) == 2 && os.Args[1] == "mode" {
			fmt.Println(mode)
			return nil
		}
		return fmt.Errorf("run as one of %v (a link to this binary), or as `iptables-wrapper mode`", iptwrapper.Commands)
	}
	bin, argv0, err := iptwrapper.Target(name, mode)
	if err != nil {
		return err
	}
	// Best effort: on a read-only root file system every call decides again.
	_ = iptwrapper.Relink(dir, mode)
	path := filepath.Join(dir, bin)
	return fmt.Errorf("exec %s: %w", path, syscall.Exec(path, append([]string{argv0}, os.Args[1:]...), os.Environ()))
}
