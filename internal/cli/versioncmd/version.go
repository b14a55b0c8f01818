// Package versioncmd implements `kubectl mcnet version`.
package versioncmd

import (
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/mcnet-io/mcnet/internal/cli/clioptions"
	"github.com/mcnet-io/mcnet/internal/output"
	"github.com/mcnet-io/mcnet/internal/version"
)

// Kind is the kind of version's document.
const Kind = "Version"

// Options are the flags of the version command.
type Options struct {
	Print *clioptions.PrintFlags

	flagErr error
	genericiooptions.IOStreams
}

// Report is version's document: the plugin's build, under the report TypeMeta.
type Report struct {
	output.TypeMeta `json:",inline"`
	version.Info    `json:",inline"`
}

// DeepCopyObject makes the report a runtime.Object, which cli-runtime's printers take.
func (r *Report) DeepCopyObject() runtime.Object { return output.DeepCopyJSON(r) }

// NewCommand returns the version command.
func NewCommand(streams genericiooptions.IOStreams) *cobra.Command {
	o := &Options{IOStreams: streams, Print: clioptions.NewPrintFlags("")}
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the plugin's version, Go version and platform",
		Long: `Version prints the plugin's build. It reads no cluster: show versions prints the
versions of what runs in each cluster.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Complete(cmd)
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run()
		},
	}
	o.Print.AddFlags(cmd)
	return cmd
}

// Complete notes kubeconfig flags, which version has no use for.
func (o *Options) Complete(cmd *cobra.Command) {
	o.flagErr = clioptions.RejectKubeconfigFlags(cmd, "version reads no cluster (kubectl mcnet show versions does)")
}

// Validate checks the flags.
func (o *Options) Validate() error {
	if o.flagErr != nil {
		return o.flagErr
	}
	return o.Print.Validate()
}

// Run prints the version.
func (o *Options) Run() error {
	info := version.Get()
	if !o.Print.Default() {
		return o.Print.Print(o.Out, &Report{TypeMeta: output.Meta(Kind), Info: info})
	}
	commit := ""
	if info.Commit != "" {
		commit = " (" + info.Commit + ")"
	}
	_, err := fmt.Fprintf(o.Out, "kubectl-mcnet %s%s %s %s\n", info.Version, commit, info.GoVersion, info.Platform)
	return err
}
