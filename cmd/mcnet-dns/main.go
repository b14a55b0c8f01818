// Command mcnet-dns answers DNS for the clusterset domain in every cluster, from the
// ServiceImports, EndpointSlices and Gateways of its own cluster. It needs neither the
// broker nor leadership, so several replicas answer alike through a broker outage.
//
// It listens on :5353 (UDP and TCP) by default; the rendered CoreDNS block forwards
// the clusterset domain to it through its Service.
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
	// Flags hold only process-local choices (bind addresses, log level, the path of
	// the agent config); cluster identity comes from the rendered AgentConfig that
	// Complete reads. --help exits 0, a bad flag 2, both before anything starts.
	if code, ok := agentconfig.ParseFlags(fs, os.Args[1:]); !ok {
		os.Exit(code)
	}
	if err := o.Complete(); err != nil {
		// A missing or invalid agent config is a deployment mistake only the user
		// can fix (re-render the fleet): exit 2, as for a bad flag.
		fmt.Fprintln(os.Stderr, "mcnet-dns:", err)
		os.Exit(2)
	}
	if err := o.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "mcnet-dns:", err)
		os.Exit(2)
	}
	// Logger also routes klog (client-go's leader election and reflectors) into the
	// same structured logger, so every line has one format.
	logger := o.Logger()
	ctrl.SetLogger(logger)
	// The first SIGTERM or Ctrl-C cancels ctx and the managers stop in order; a
	// second one exits at once. Code below reads its logger from ctx.
	ctx := ctrl.LoggerInto(ctrl.SetupSignalHandler(), logger)
	if err := controller.RunDNS(ctx, o); err != nil {
		logger.Error(err, "mcnet-dns failed")
		os.Exit(1)
	}
}
