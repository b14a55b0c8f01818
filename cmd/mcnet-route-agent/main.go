// Command mcnet-route-agent runs on every node and routes the remote clusters'
// networks to the cluster's active gateway.
//
// It follows the gateway Lease, so a failover moves the routes of every node to the
// new gateway; it also answers the NetworkTests that diagnose and benchmark create.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/mcnet-io/mcnet/controllers/routes"
	"github.com/mcnet-io/mcnet/internal/agentconfig"
)

func main() {
	var o routes.Options
	fs := pflag.NewFlagSet("mcnet-route-agent", pflag.ContinueOnError)
	o.AddFlags(fs)
	// --help exits 0 and a bad flag 2 before anything touches the kernel. The agent
	// config is read and checked inside Run, which returns its error before starting.
	if code, ok := agentconfig.ParseFlags(fs, os.Args[1:]); !ok {
		os.Exit(code)
	}
	// The logger takes klog's lines too (client-go's Lease errors), in one format.
	log := o.Logger()
	// SIGTERM is how the kubelet stops the pod: Run then leaves the kernel state in
	// place for the next process, so a restart or upgrade does not drop traffic.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := routes.Run(ctx, log, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mcnet-route-agent:", err)
		os.Exit(1)
	}
}
