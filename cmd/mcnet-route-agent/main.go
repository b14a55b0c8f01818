// Command mcnet-route-agent runs on every node and routes the remote clusters'
// networks to the cluster's active gateway.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/mcnet-io/mcnet/internal/routeagent"
)

func main() {
	var o routeagent.Options
	fs := pflag.NewFlagSet("mcnet-route-agent", pflag.ContinueOnError)
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
	err := routeagent.Run(ctx, log, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mcnet-route-agent:", err)
		os.Exit(1)
	}
}
