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

// ready is printed once the signals are caught: a SIGTERM before that (while the Go
// runtime starts) ends the process with status 2, or, to PID 1, is lost.
const ready = "pause: waiting for SIGTERM or SIGINT"

// wait reaps children on SIGCHLD until SIGTERM or SIGINT arrives, then returns the exit
// code 0.
func wait(sigs chan os.Signal) int {
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	fmt.Fprintln(os.Stderr, ready)
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
