// Package broker implements `kubectl mcnet broker`: operations on the broker, such as
// minting a cluster's broker credentials.
package broker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/cli/clioptions"
	"github.com/mcnet-io/mcnet/internal/cmdutil"
	"github.com/mcnet-io/mcnet/internal/fleet"
	"github.com/mcnet-io/mcnet/internal/naming"
	"github.com/mcnet-io/mcnet/kustomize"
)

// NewCommand returns the broker command group.
func NewCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "broker",
		Short: "Operate on the broker (credentials for member clusters)",
	}
	cmd.AddCommand(newCredentialsCommand(flags, streams))
	return cmd
}

// CredentialsOptions are the flags of `broker credentials`.
type CredentialsOptions struct {
	// Cluster is the member whose broker identity (ServiceAccount
	// cluster-NAME) the token is minted for.
	Cluster string
	// FleetFile, when given, supplies the broker namespace and URL and proves
	// Cluster is a member, so a typo cannot mint a token for nobody.
	FleetFile       string
	BrokerNamespace string
	// Server is the broker URL written into the Secret: what the member dials,
	// which may differ from how this command reaches the broker.
	Server string
	// Duration is the token's requested lifetime; the API server may cap it.
	Duration time.Duration
	// Print is -o; YAML by default, since the Secret goes to kubeseal or SOPS.
	Print *clioptions.PrintFlags

	flags   *genericclioptions.ConfigFlags
	flagErr error        // a kubeconfig flag that cannot apply, reported by Validate
	config  *rest.Config // how this command reaches the broker's cluster
	genericiooptions.IOStreams
}

func newCredentialsCommand(flags *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &CredentialsOptions{flags: flags, IOStreams: streams, Print: clioptions.NewPrintFlags("").WithDefault("yaml")}
	cmd := &cobra.Command{
		Use:   "credentials --cluster NAME",
		Short: "Mint a cluster's broker credentials and print them as a Secret for that cluster",
		Long: `Credentials mints a token for the cluster's own identity on the broker (the
ServiceAccount cluster-NAME that render put in the broker namespace) and prints the
Secret mcnet-system/mcnet-broker-credentials that the cluster's controller reads.

Run it against the broker's cluster (--context). The Secret goes to stdout only: seal
or encrypt it (kubeseal, SOPS) before it goes anywhere near Git, or apply it directly.
The token is bound to the ServiceAccount and expires after --duration (the API server
may cap it); mint a new one before then.

--server here is the broker's URL as the member reaches it, written into the Secret;
the rest of the kubeconfig flags (--context, --token, ...) say how this command
reaches the broker's cluster, and -n is the broker namespace.`,
		Example: `  kubectl mcnet broker credentials --context hub --cluster east -f fleet.yaml | kubeseal -o yaml > east-broker.sealed.yaml
  kubectl mcnet broker credentials --context hub --cluster east | kubectl --context east apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.flagErr = clioptions.RejectKubeconfigFlags(cmd, "broker credentials makes no discovery requests to cache", allButCacheDir()...)
			if err := o.Complete(); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Cluster, "cluster", "", "Member cluster to mint credentials for")
	f.StringVarP(&o.FleetFile, "filename", "f", "", "Fleet file: takes the broker namespace and server from it and checks the cluster is a member")
	f.StringVar(&o.BrokerNamespace, "broker-namespace", "", "Broker namespace (default: the fleet's, else "+mcnetv1.DefaultBrokerNamespace+")")
	f.StringVar(&o.Server, "server", "", "Broker URL as the member cluster reaches it (default: the fleet's broker server, else the current context's)")
	f.DurationVar(&o.Duration, "duration", 365*24*time.Hour, "Token lifetime")
	o.Print.AddFlags(cmd)
	_ = cmd.MarkFlagRequired("cluster")
	return cmd
}

// allButCacheDir lists the kubeconfig flags this command honours: all but
// --cache-dir, since it makes no discovery requests whose answers could be cached.
func allButCacheDir() []string {
	var out []string
	for _, n := range clioptions.KubeconfigFlags() {
		if n != "cache-dir" {
			out = append(out, n)
		}
	}
	return out
}

// Complete reads the fleet (if given) and the kubeconfig.
func (o *CredentialsOptions) Complete() error {
	if o.FleetFile != "" {
		cs, err := fleet.Load(o.FleetFile)
		if err != nil {
			return cmdutil.Usage(err)
		}
		// Only a member has a broker identity; say so before asking the API
		// server, whose "not found" could mean several things.
		member := false
		for _, c := range cs.Spec.Clusters {
			member = member || c.Name == o.Cluster
		}
		if !member {
			return cmdutil.Usage(fmt.Errorf("--cluster %q is not in fleet %s; add it to spec.clusters and render first", o.Cluster, cs.Name))
		}
		if o.BrokerNamespace == "" {
			o.BrokerNamespace = cs.Spec.Broker.Namespace
		}
		if o.Server == "" {
			o.Server = cs.Spec.Broker.Server
		}
	}
	// -n and --broker-namespace name the same thing; two different answers
	// are refused rather than one silently winning.
	if ns := o.namespaceFlag(); ns != "" {
		if o.BrokerNamespace != "" && o.BrokerNamespace != ns {
			return cmdutil.Usage(fmt.Errorf("-n %s and the broker namespace %s (--broker-namespace or the fleet's) differ; give one", ns, o.BrokerNamespace))
		}
		o.BrokerNamespace = ns
	}
	if o.BrokerNamespace == "" {
		o.BrokerNamespace = mcnetv1.DefaultBrokerNamespace
	}
	cfg, err := o.flags.ToRESTConfig()
	if err != nil {
		return cmdutil.Usage(fmt.Errorf("connect to the broker's cluster: %w", err))
	}
	o.config = cfg
	// With neither --server nor a fleet, the member is assumed to reach the
	// broker where this command does.
	if o.Server == "" {
		o.Server = cfg.Host
	}
	return nil
}

// namespaceFlag is -n when given on the command line; the kubeconfig context's own
// namespace is a member's workload namespace, not the broker's, so it does not count.
func (o *CredentialsOptions) namespaceFlag() string {
	if o.flags.Namespace == nil {
		return ""
	}
	return *o.flags.Namespace
}

// Validate checks the flags.
func (o *CredentialsOptions) Validate() error {
	errs := []error{o.flagErr, o.Print.Validate()}
	for _, msg := range validation.IsDNS1123Label(o.Cluster) {
		errs = append(errs, fmt.Errorf("--cluster %q: %s", o.Cluster, msg))
	}
	// A token shorter than this would expire before a GitOps pipeline has
	// sealed, committed and applied it.
	if o.Duration < 10*time.Minute {
		errs = append(errs, fmt.Errorf("--duration %s is too short; use at least 10m", o.Duration))
	}
	return cmdutil.Usage(errors.Join(errs...))
}

// Run mints the token and prints the Secret.
func (o *CredentialsOptions) Run(ctx context.Context) error {
	cs, err := kubernetes.NewForConfig(o.config)
	if err != nil {
		return cmdutil.Usage(err)
	}
	// A TokenRequest gives a bound, expiring token: nothing long-lived is
	// stored in the broker's cluster, and revoking the ServiceAccount revokes it.
	sa := kustomize.BrokerServiceAccount(o.Cluster)
	seconds := int64(o.Duration.Seconds())
	tr, err := cs.CoreV1().ServiceAccounts(o.BrokerNamespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &seconds},
	}, metav1.CreateOptions{})
	if apierrors.IsNotFound(err) {
		return cmdutil.Usage(fmt.Errorf("no broker identity %s/%s: is this the broker's cluster (--context), and has the rendered broker/ been applied with cluster %s in the fleet?", o.BrokerNamespace, sa, o.Cluster))
	}
	if err != nil {
		return cmdutil.Usage(fmt.Errorf("mint a token for %s/%s: %w", o.BrokerNamespace, sa, err))
	}
	kubeconfig, err := o.kubeconfig(tr.Status.Token)
	if err != nil {
		return cmdutil.Failure(err)
	}
	secret := naming.BrokerCredentials(o.Cluster, kubeconfig, tr.Status.ExpirationTimestamp.Time)
	if o.Print.Format() == "yaml" {
		// YAML is what goes to kubeseal or SOPS; the warning travels with it as a comment.
		fmt.Fprintf(o.Out, "# Broker credentials of cluster %s, valid until %s. Secret material: seal or encrypt before storing.\n",
			o.Cluster, tr.Status.ExpirationTimestamp.UTC().Format(time.RFC3339))
	}
	return o.Print.Print(o.Out, secret)
}

// kubeconfig writes the member's view of the broker: the broker URL, the CA this
// command trusted to reach it (inlined, since the member has no such file), the
// token, and the broker namespace as the context's default.
func (o *CredentialsOptions) kubeconfig(token string) ([]byte, error) {
	ca := o.config.CAData
	if len(ca) == 0 && o.config.CAFile != "" {
		var err error
		if ca, err = os.ReadFile(o.config.CAFile); err != nil {
			return nil, fmt.Errorf("read the broker's CA: %w", err)
		}
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["broker"] = &clientcmdapi.Cluster{Server: o.Server, CertificateAuthorityData: ca}
	kc.AuthInfos[o.Cluster] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts["broker"] = &clientcmdapi.Context{Cluster: "broker", AuthInfo: o.Cluster, Namespace: o.BrokerNamespace}
	kc.CurrentContext = "broker"
	return clientcmd.Write(*kc)
}
