// Command mcnet-dns answers DNS for the clusterset domain in every cluster, from the
// ServiceImports, EndpointSlices and Gateways of its own cluster. It needs neither the
// broker nor leadership, so several replicas answer alike through a broker outage.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/pflag"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/mcnet-io/mcnet/internal/agentconfig"
	"github.com/mcnet-io/mcnet/internal/controller"
)

func main() {
	var o controller.DNSOptions
	fs := pflag.NewFlagSet("mcnet-dns", pflag.ContinueOnError)
	o.AddFlags(fs)
	if code, ok := agentconfig.ParseFlags(fs, os.Args[1:]); !ok {
		os.Exit(code)
	}
	if err := o.Complete(); err != nil {
		fmt.Fprintln(os.Stderr, "mcnet-dns:", err)
		os.Exit(2)
	}
	if err := o.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "mcnet-dns:", err)
		os.Exit(2)
	}
	logger := o.Logger()
	ctrl.SetLogger(logger)
	ctx := ctrl.LoggerInto(ctrl.SetupSignalHandler(), logger)
	if err := controller.RunDNS(ctx, o); err != nil {
		logger.Error(err, "mcnet-dns failed")
		os.Exit(1)
	}
}
