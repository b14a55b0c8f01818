// Command mcnet-gateway runs on gateway nodes: one per cluster is active (by Lease),
// builds the cables to every remote cluster and reports their health.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/mcnet-io/mcnet/controllers/gateway"
	"github.com/mcnet-io/mcnet/internal/agentconfig"
)

func main() {
	var o gateway.Options
	fs := pflag.NewFlagSet("mcnet-gateway", pflag.ContinueOnError)
	o.AddFlags(fs)
	if code, ok := agentconfig.ParseFlags(fs, os.Args[1:]); !ok {
		os.Exit(code)
	}
	log := o.Logger()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := gateway.Run(ctx, log, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mcnet-gateway:", err)
		os.Exit(1)
	}
}
