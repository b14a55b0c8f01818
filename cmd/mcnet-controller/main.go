// Command mcnet-controller runs in every cluster: it syncs the cluster with the broker,
// exports and imports services, and answers DNS for the clusterset domain.
package main

import (
	"flag"
	"fmt"
	"os"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/mcnet-io/mcnet/internal/controller"
)

func main() {
	var o controller.Options
	fs := flag.NewFlagSet("mcnet-controller", flag.ExitOnError)
	o.BindFlags(fs)
	zo := zap.Options{}
	zo.BindFlags(fs)
	_ = fs.Parse(os.Args[1:])
	o.Complete()
	if err := o.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "mcnet-controller:", err)
		os.Exit(2)
	}
	logger := zap.New(zap.UseFlagOptions(&zo))
	ctrl.SetLogger(logger)
	ctx := ctrl.LoggerInto(ctrl.SetupSignalHandler(), logger)
	if err := controller.Run(ctx, o); err != nil {
		logger.Error(err, "mcnet-controller failed")
		os.Exit(1)
	}
}
