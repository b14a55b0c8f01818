// Command mcnet-controller runs in every cluster: it syncs the cluster with the broker,
// and exports and imports services. DNS for the clusterset domain is mcnet-dns's.
//
// With --leader-elect (the default) one replica at a time is active, elected through
// a Lease. It reaches the broker with --broker-kubeconfig, the credentials that
// `kubectl mcnet broker credentials` prepared, and serves metrics on :9450 and
// /healthz and /readyz on :9451 unless told otherwise.
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
	var o controller.Options
	fs := pflag.NewFlagSet("mcnet-controller", pflag.ContinueOnError)
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
		fmt.Fprintln(os.Stderr, "mcnet-controller:", err)
		os.Exit(2)
	}
	// Logger also routes klog (client-go's leader election and reflectors) into the
	// same structured logger, so every line has one format.
	logger := o.Logger()
	// The first SIGTERM or Ctrl-C cancels ctx and the managers stop in order; a
	// second one exits at once. Code below reads its logger from ctx.
	ctx := ctrl.LoggerInto(ctrl.SetupSignalHandler(), logger)
	if err := controller.Run(ctx, o); err != nil {
		logger.Error(err, "mcnet-controller failed")
		os.Exit(1)
	}
}
