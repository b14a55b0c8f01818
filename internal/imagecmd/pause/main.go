// Command pause is the process of mcnet's pause image, the one a pod sandbox runs: it
// holds the pod's namespaces open, reaps the zombies it inherits as PID 1 of a shared
// PID namespace, and exits 0 on SIGTERM or SIGINT.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "pause takes no arguments; it waits for SIGTERM or SIGINT")
		os.Exit(2)
	}
	os.Exit(wait(make(chan os.Signal, 8)))
}

// wait reaps children on SIGCHLD until SIGTERM or SIGINT arrives, then returns the exit
// code 0.
func wait(sigs chan os.Signal) int {
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			return 0
		}
		reap()
	}
	return 0
}

// reap collects every exited child without blocking (one SIGCHLD may stand for several).
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
