// Command kubectl-mcnet is the mcnet kubectl plugin: kubectl finds it on PATH and runs
// it for `kubectl mcnet ...`. It renders a fleet into a Git repository of kustomize
// overlays, prepares broker credentials, exports services, and shows, diagnoses and
// benchmarks a running clusterset.
//
// main only wires the process to the CLI: the standard streams, the arguments, and a
// context that Ctrl-C or SIGTERM cancels. Every verb lives in internal/cli, which
// prints the error once and returns the exit code: 0 on success, 1 when a command ran
// and found problems, 2 for bad usage or input and when no cluster could be reached.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/mcnet-io/mcnet/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}, os.Args[1:])
	// Restore the default signal handling before exiting: a second Ctrl-C while a
	// verb winds down then ends the process at once.
	stop()
	os.Exit(code)
}
