// Package cli assembles the kubectl-mcnet command tree. Each verb lives in its own
// package with an Options struct (Complete → Validate → Run); this package only wires
// them under one root that carries the usual kubectl flags once.
package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"go.uber.org/zap/zapcore"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	ctrlzap "sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/mcnet-io/mcnet/internal/cli/benchmark"
	"github.com/mcnet-io/mcnet/internal/cli/broker"
	"github.com/mcnet-io/mcnet/internal/cli/diagnose"
	"github.com/mcnet-io/mcnet/internal/cli/export"
	"github.com/mcnet-io/mcnet/internal/cli/render"
	"github.com/mcnet-io/mcnet/internal/cli/show"
	"github.com/mcnet-io/mcnet/internal/cli/versioncmd"
	"github.com/mcnet-io/mcnet/internal/cmdutil"
	"github.com/mcnet-io/mcnet/internal/logging"
)

// NewCommand returns the root command of the plugin.
func NewCommand(streams genericiooptions.IOStreams) *cobra.Command {
	flags := genericclioptions.NewConfigFlags(true)
	verbosity := 0
	root := &cobra.Command{
		Use:   "mcnet",
		Short: "Multi-cluster networking for Kubernetes, installed the GitOps way",
		Long: `mcnet connects the pods and services of several Kubernetes clusters through
kernel tunnels (WireGuard or VXLAN) between gateway nodes, with the Multi-Cluster
Services API and DNS under clusterset.local for discovery.

Describe the fleet in one file, render it into a Git repository, and let Argo CD or
Flux apply it.`,
		Example: `  # Render a fleet into a Git working tree and commit it
  kubectl mcnet render -f fleet.yaml --out ./fleet-repo --commit`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl mcnet"},
		// Before any verb runs, client-go's logs (throttling notices, and at -v 6 every
		// request) go to stderr in the same format as the rest of the plugin's, after
		// the flags are parsed so -v counts.
		PersistentPreRun: func(*cobra.Command, []string) {
			logging.Route(ctrlzap.New(ctrlzap.WriteTo(streams.ErrOut), ctrlzap.ConsoleEncoder(), ctrlzap.Level(zapcore.Level(-verbosity))), verbosity)
		},
	}
	flags.AddFlags(root.PersistentFlags())
	root.PersistentFlags().IntVarP(&verbosity, "v", "v", 0, "Log verbosity of stderr, client-go's lines included (6 logs each API request)")
	root.AddCommand(
		render.NewCommand(streams),
		broker.NewCommand(flags, streams),
		versioncmd.NewCommand(streams),
		show.NewCommand(flags, streams),
		diagnose.NewCommand(flags, streams),
		benchmark.NewCommand(flags, streams),
		export.NewCommand(flags, streams),
		export.NewUnexportCommand(flags, streams),
	)
	return root
}

// Run executes the plugin with args and returns the process exit code: 0 on success, 1
// when a command found problems, 2 for bad usage or input and for connection errors.
func Run(ctx context.Context, streams genericiooptions.IOStreams, args []string) int {
	cmd := NewCommand(streams)
	cmd.SetArgs(args)
	cmd.SetIn(streams.In)
	cmd.SetOut(streams.Out)
	cmd.SetErr(streams.ErrOut)
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(streams.ErrOut, "Error:", err)
	var coded *cmdutil.ExitError
	if errors.As(err, &coded) {
		return coded.Code
	}
	// Errors cobra itself raises are about usage: unknown flags, commands or arguments.
	return cmdutil.ExitUsage
}
