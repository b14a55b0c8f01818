// Command mcnet-gateway runs on gateway nodes: one per cluster is active (by Lease),
// builds the cables to every remote cluster and reports their health.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/mcnet-io/mcnet/internal/gateway"
)

func main() {
	var o gateway.Options
	fs := pflag.NewFlagSet("mcnet-gateway", pflag.ContinueOnError)
	o.Common.AddFlags(fs)
	o.AddFlags(fs)
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
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
