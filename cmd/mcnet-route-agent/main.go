// Command mcnet-route-agent runs on every node and routes the remote clusters'
// networks to the cluster's active gateway.
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
	if code, ok := agentconfig.ParseFlags(fs, os.Args[1:]); !ok {
		os.Exit(code)
	}
	log := o.Logger()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := routes.Run(ctx, log, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mcnet-route-agent:", err)
		os.Exit(1)
	}
}
