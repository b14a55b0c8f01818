// Command mcnet-lab brings up the lab for people: `make lab` runs `mcnet-lab up`,
// `make lab-down` runs `mcnet-lab down`.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/mcnet-io/mcnet/e2e/internal/labcmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := labcmd.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, labcmd.ErrUsage):
		fmt.Fprintln(os.Stderr, "mcnet-lab:", err)
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "mcnet-lab:", err)
		os.Exit(1)
	}
}
