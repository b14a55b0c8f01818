// Command mcnet-controller runs in every cluster: it syncs the cluster with the broker,
// and exports and imports services. DNS for the clusterset domain is mcnet-dns's.
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
	if code, ok := agentconfig.ParseFlags(fs, os.Args[1:]); !ok {
		os.Exit(code)
	}
	if err := o.Complete(); err != nil {
		fmt.Fprintln(os.Stderr, "mcnet-controller:", err)
		os.Exit(2)
	}
	logger := o.Logger()
	ctx := ctrl.LoggerInto(ctrl.SetupSignalHandler(), logger)
	if err := controller.Run(ctx, o); err != nil {
		logger.Error(err, "mcnet-controller failed")
		os.Exit(1)
	}
}
