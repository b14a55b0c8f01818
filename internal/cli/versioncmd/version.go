// Package versioncmd implements `kubectl mcnet version`.
package versioncmd

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/yaml"

	"github.com/mcnet-io/mcnet/internal/cmdutil"
	"github.com/mcnet-io/mcnet/internal/version"
)

// Options are the flags of the version command.
type Options struct {
	Output string
	genericiooptions.IOStreams
}

// NewCommand returns the version command.
func NewCommand(streams genericiooptions.IOStreams) *cobra.Command {
	o := &Options{IOStreams: streams}
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the plugin's version, Go version and platform",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run()
		},
	}
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "Output format: empty for text, json or yaml")
	return cmd
}

// Validate checks the flags.
func (o *Options) Validate() error {
	switch o.Output {
	case "", "json", "yaml":
		return nil
	}
	return cmdutil.Usage(fmt.Errorf("--output %q is not supported; use json or yaml, or leave it out", o.Output))
}

// Run prints the version.
func (o *Options) Run() error {
	info := version.Get()
	doc := struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		version.Info
	}{"mcnet.io/v1alpha1", "Version", info}
	switch o.Output {
	case "json":
		enc := json.NewEncoder(o.Out)
		enc.SetIndent("", "  ")
		return enc.Encode(doc)
	case "yaml":
		data, err := yaml.Marshal(doc)
		if err != nil {
			return err
		}
		_, err = o.Out.Write(data)
		return err
	}
	commit := ""
	if info.Commit != "" {
		commit = " (" + info.Commit + ")"
	}
	_, err := fmt.Fprintf(o.Out, "kubectl-mcnet %s%s %s %s\n", info.Version, commit, info.GoVersion, info.Platform)
	return err
}
