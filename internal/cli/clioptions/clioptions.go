// Package clioptions holds the flag plumbing every kubectl-mcnet verb shares: how a
// report is printed (cli-runtime's printers behind -o) and which kubeconfig flags a
// verb may be given.
//
// Reports are runtime.Objects so that the printers kubectl users already know work on
// them unchanged: -o json, yaml, name, jsonpath=..., go-template=... A verb prints its
// own table when -o is empty (or "table", kept for scripts written before -o grew).
package clioptions

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/printers"

	"github.com/mcnet-io/mcnet/internal/cmdutil"
)

// Table is the -o value (and the empty default) that asks for the verb's own table.
const Table = "table"

// Subjects is what a report implements to be printed with -o name: the objects it is
// about (for show, diagnose and benchmark, the clusters), one line each.
type Subjects interface {
	Subjects() []runtime.Object
}

// PrintFlags are -o and the template flags, backed by cli-runtime's PrintFlags.
type PrintFlags struct {
	flags *genericclioptions.PrintFlags
	// table is the extra -o value that names the verb's own output ("table"), or "".
	table string
}

// NewPrintFlags returns print flags whose default (-o not given) is the verb's own
// output; table, when not empty, is an -o value that asks for it explicitly.
func NewPrintFlags(table string) *PrintFlags {
	return &PrintFlags{flags: genericclioptions.NewPrintFlags(""), table: table}
}

// WithDefault makes -o default to format instead of the verb's own output.
func (f *PrintFlags) WithDefault(format string) *PrintFlags {
	f.flags.WithDefaultOutput(format)
	return f
}

// AddFlags registers -o, --template and --allow-missing-template-keys. It leaves out
// --show-managed-fields, which cli-runtime would add: reports have no managed fields,
// and a flag that can change nothing should not be offered.
func (f *PrintFlags) AddFlags(cmd *cobra.Command) {
	f.flags.TemplatePrinterFlags.AddFlags(cmd)
	formats := f.AllowedFormats()
	cmd.Flags().StringVarP(f.flags.OutputFormat, "output", "o", *f.flags.OutputFormat, "Output format. One of: ("+strings.Join(formats, ", ")+").")
	f.flags.OutputFlagSpecified = func() bool { return cmd.Flags().Changed("output") }
	_ = cmd.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return formats, cobra.ShellCompDirectiveNoFileComp
	})
}

// AllowedFormats lists the -o values, the verb's own first when it has a name.
func (f *PrintFlags) AllowedFormats() []string {
	out := f.flags.AllowedFormats()
	slices.Sort(out)
	if f.table != "" {
		out = append([]string{f.table}, out...)
	}
	return out
}

// Format is the -o value as given.
func (f *PrintFlags) Format() string { return *f.flags.OutputFormat }

// Default says whether the verb should print its own output (its table, or a line
// saying what it did) rather than hand an object to a printer.
func (f *PrintFlags) Default() bool {
	o := f.Format()
	templated := f.flags.TemplatePrinterFlags.TemplateArgument != nil && *f.flags.TemplatePrinterFlags.TemplateArgument != ""
	return (o == "" && !templated) || (f.table != "" && o == f.table)
}

// Validate checks -o and compiles a template, so a typo fails before any cluster is
// contacted.
func (f *PrintFlags) Validate() error {
	if f.Default() {
		return nil
	}
	if _, err := f.flags.ToPrinter(); err != nil {
		if genericclioptions.IsNoCompatiblePrinterError(err) {
			return cmdutil.Usage(fmt.Errorf("--output %q is not supported; use one of %s", f.Format(), strings.Join(f.AllowedFormats(), ", ")))
		}
		return cmdutil.Usage(fmt.Errorf("--output %s: %w", f.Format(), err))
	}
	return nil
}

// Print writes obj with the printer -o chose. With -o name a report that has Subjects
// prints those instead of itself.
func (f *PrintFlags) Print(w io.Writer, obj runtime.Object) error {
	p, err := f.flags.ToPrinter()
	if err != nil {
		return cmdutil.Usage(err)
	}
	if s, ok := obj.(Subjects); ok && strings.EqualFold(f.Format(), "name") {
		for _, o := range s.Subjects() {
			if err := p.PrintObj(o, w); err != nil {
				return err
			}
		}
		return nil
	}
	return p.PrintObj(obj, w)
}

// Printer returns the printer -o chose, for verbs that print objects other than a
// report (a Secret, a ServiceExport).
func (f *PrintFlags) Printer() (printers.ResourcePrinter, error) { return f.flags.ToPrinter() }

// KubeconfigFlags lists the flags that genericclioptions.ConfigFlags adds to the root.
func KubeconfigFlags() []string {
	fs := pflag.NewFlagSet("kubeconfig", pflag.ContinueOnError)
	genericclioptions.NewConfigFlags(true).AddFlags(fs)
	var names []string
	fs.VisitAll(func(f *pflag.Flag) { names = append(names, f.Name) })
	return names
}

// RejectKubeconfigFlags fails when a kubeconfig flag of the root was given to a verb
// that does not use it, naming the flags and why, rather than ignoring them: a user
// who typed --context expects it to matter. Flags the verb defines itself (broker
// credentials has its own --server) are its own business; allow lists the root flags
// the verb does honour.
func RejectKubeconfigFlags(cmd *cobra.Command, why string, allow ...string) error {
	var given []string
	for _, name := range KubeconfigFlags() {
		// --kubeconfig only says where the file is, as $KUBECONFIG does; wrappers and
		// scripts pass it to every verb, so it is never refused.
		if name == "kubeconfig" || slices.Contains(allow, name) || cmd.LocalNonPersistentFlags().Lookup(name) != nil {
			continue
		}
		if f := cmd.Flags().Lookup(name); f != nil && f.Changed {
			given = append(given, "--"+name)
		}
	}
	if len(given) == 0 {
		return nil
	}
	verb := "does"
	if len(given) > 1 {
		verb = "do"
	}
	return cmdutil.Usage(fmt.Errorf("%s %s not apply here: %s", strings.Join(given, ", "), verb, why))
}
