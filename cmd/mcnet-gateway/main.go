// Command mcnet-gateway runs on gateway nodes: one per cluster is active (by Lease),
// builds the cables to every remote cluster and reports their health.
//
// The standby gateways of a cluster watch the same Lease and take over when the
// active one stops renewing it. The cables' state (status, RTT, probe loss, bytes)
// is in the cluster's Gateway status and on the metrics endpoint, :9452 by default.
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
	err := gateway.Run(ctx, log, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mcnet-gateway:", err)
		os.Exit(1)
	}
}
