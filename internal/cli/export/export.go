// Package export implements `kubectl mcnet export` and `unexport`: create or delete
// the ServiceExport (Multi-Cluster Services API) that shares a Service with the fleet.
package export

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	"github.com/mcnet-io/mcnet/internal/cli/clioptions"
	"github.com/mcnet-io/mcnet/internal/cmdutil"
	"github.com/mcnet-io/mcnet/internal/multicluster"
)

// Options are the flags and state of export and unexport.
type Options struct {
	// Unexport turns the verb around: delete the ServiceExport.
	Unexport bool
	// Name is the Service's name, from service/NAME.
	Name string
	// DryRun "client" prints the object for Git and contacts no cluster.
	DryRun string
	// Print is -o; without it the verb prints one line saying what it did.
	Print *clioptions.PrintFlags

	namespace string // -n, else the kubeconfig context's namespace
	flags     *genericclioptions.ConfigFlags
	client    client.Client // nil on a dry run
	genericiooptions.IOStreams
}

// NewCommand returns the export command.
func NewCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	return newCommand(flags, streams, false)
}

// NewUnexportCommand returns the unexport command.
func NewUnexportCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	return newCommand(flags, streams, true)
}

// newCommand builds export or unexport: one set of flags and one Run, so the
// two verbs cannot drift apart in what they accept.
func newCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams, unexport bool) *cobra.Command {
	o := &Options{flags: flags, IOStreams: streams, Unexport: unexport, Print: clioptions.NewPrintFlags("")}
	cmd := &cobra.Command{
		Use:   "export service/NAME",
		Short: "Share a Service with the other clusters (create its ServiceExport)",
		Long: `Export creates the ServiceExport of a Service in the current context's cluster, so
the other clusters import it as NAME.NAMESPACE.svc.clusterset.local.
--dry-run=client -o yaml prints the ServiceExport for Git instead.`,
		Example: `  kubectl mcnet export service/db -n app
  kubectl mcnet export svc/db -n app --dry-run=client -o yaml > app/db-export.yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(args); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	if unexport {
		cmd.Use = "unexport service/NAME"
		cmd.Short = "Stop sharing a Service (delete its ServiceExport)"
		cmd.Long = "Unexport deletes the ServiceExport of a Service; the other clusters drop the import."
		cmd.Example = "  kubectl mcnet unexport service/db -n app"
	}
	cmd.Flags().StringVar(&o.DryRun, "dry-run", "none", `"none" or "client" (print the object, change nothing)`)
	o.Print.AddFlags(cmd)
	return cmd
}

// Complete parses the argument, takes the namespace (-n, else the context's) and,
// unless dry-running, connects.
func (o *Options) Complete(args []string) error {
	// kubectl's TYPE/NAME form, with a bare NAME taken as a Service; the
	// plural and short forms kubectl accepts are accepted too.
	kind, name, found := strings.Cut(args[0], "/")
	if !found {
		kind, name = "service", args[0]
	}
	switch strings.ToLower(kind) {
	case "service", "services", "svc":
	default:
		return cmdutil.Usage(fmt.Errorf("%q: only services can be exported (service/NAME)", args[0]))
	}
	if name == "" {
		return cmdutil.Usage(errors.New("name the service: service/NAME"))
	}
	o.Name = name
	ns, _, err := o.flags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return cmdutil.Usage(err)
	}
	o.namespace = ns
	// A dry run must work with no cluster reachable: it is how the object
	// gets into a GitOps repository.
	if o.DryRun == "client" {
		return nil
	}
	t, err := multicluster.TargetFor("", o.flags)
	if err != nil {
		return cmdutil.Usage(err)
	}
	o.client = t.Client
	return nil
}

// Validate checks --dry-run and -o.
func (o *Options) Validate() error {
	switch o.DryRun {
	case "none", "client":
	default:
		return cmdutil.Usage(fmt.Errorf("--dry-run=%s: use none or client", o.DryRun))
	}
	return o.Print.Validate()
}

// Object is the ServiceExport export creates.
func (o *Options) Object() *mcsv1alpha1.ServiceExport {
	return &mcsv1alpha1.ServiceExport{
		TypeMeta:   metav1.TypeMeta{APIVersion: mcsv1alpha1.GroupVersion.String(), Kind: "ServiceExport"},
		ObjectMeta: metav1.ObjectMeta{Name: o.Name, Namespace: o.namespace},
	}
}

// Run creates, deletes or prints the ServiceExport.
func (o *Options) Run(ctx context.Context) error {
	obj := o.Object()
	verb := "exported"
	if o.Unexport {
		verb = "unexported"
	}
	if o.DryRun == "client" {
		if !o.Print.Default() {
			return o.Print.Print(o.Out, obj)
		}
		if o.Unexport {
			_, err := fmt.Fprintf(o.Out, "serviceexport.multicluster.x-k8s.io/%s %s (dry run)\n", o.Name, verb)
			return err
		}
		// A dry run is for Git: without -o it prints the object as YAML.
		return o.Print.WithDefault("yaml").Print(o.Out, obj)
	}
	if o.Unexport {
		if err := o.client.Delete(ctx, obj); err != nil {
			if apierrors.IsNotFound(err) {
				return cmdutil.Failure(fmt.Errorf("service %s/%s is not exported", o.namespace, o.Name))
			}
			return connErr(err)
		}
	} else {
		// The API server would accept a ServiceExport of a Service that does
		// not exist (it would only show a condition later); a typo deserves
		// an error now.
		var svc corev1.Service
		if err := o.client.Get(ctx, client.ObjectKey{Namespace: o.namespace, Name: o.Name}, &svc); err != nil {
			if apierrors.IsNotFound(err) {
				return cmdutil.Failure(fmt.Errorf("service %s/%s not found; export names an existing Service", o.namespace, o.Name))
			}
			return connErr(err)
		}
		// Exporting twice is not an error: the wanted state holds.
		if err := o.client.Create(ctx, obj); err != nil {
			if !apierrors.IsAlreadyExists(err) {
				return connErr(err)
			}
			verb = "already exported"
		}
	}
	if !o.Print.Default() {
		// The client's decoder drops the kind of a typed object; printers need it.
		obj.TypeMeta = o.Object().TypeMeta
		return o.Print.Print(o.Out, obj)
	}
	_, err := fmt.Fprintf(o.Out, "service %s/%s %s\n", o.namespace, o.Name, verb)
	return err
}

// connErr sorts an API error into an exit code: the server's refusal (RBAC,
// validation) is a failure of the request (1), anything else means the cluster
// was not reached as asked (2).
func connErr(err error) error {
	if apierrors.IsForbidden(err) || apierrors.IsInvalid(err) {
		return cmdutil.Failure(err)
	}
	return &cmdutil.ExitError{Code: cmdutil.ExitUsage, Err: err}
}
