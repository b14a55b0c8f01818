// Package agentconfig is how mcnet's in-cluster binaries learn who they are: each reads its
// cluster's AgentConfig (rendered into Git, mounted from a ConfigMap) with Load, and
// takes the few flags that are a process's own choice through Process. The controller,
// the gateway and the route agent share both, and pflag, so the same flag means the same
// thing in each of them.
package agentconfig

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	"go.uber.org/zap/zapcore"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/logging"
)

// ErrInvalid is wrapped by every error that is the config file's fault.
var ErrInvalid = errors.New("invalid config")

// Load reads, defaults and validates the AgentConfig at path.
func Load(path string) (*mcnetv1.AgentConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config (rendered as ConfigMap %s/%s): %w", mcnetv1.SystemNamespace, mcnetv1.AgentConfigMap, err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse decodes an AgentConfig strictly (unknown and duplicate fields are errors), fills
// in its defaults and validates it, reporting every problem at once.
func Parse(data []byte) (*mcnetv1.AgentConfig, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("%w: the file is empty; render the fleet again (kubectl mcnet render)", ErrInvalid)
	}
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	var c mcnetv1.AgentConfig
	strict, err := kjson.UnmarshalStrict(js, &c)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if len(strict) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, errors.Join(strict...))
	}
	mcnetv1.SetDefaults_AgentConfig(&c)
	if errs := mcnetv1.ValidateAgentConfig(&c); len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = "  - " + e.Error()
		}
		return nil, fmt.Errorf("%w: %d problem(s):\n%s", ErrInvalid, len(errs), strings.Join(msgs, "\n"))
	}
	return &c, nil
}

// Process holds the flags every in-cluster binary takes. All are the process's own
// choice; nothing about the cluster is a flag.
type Process struct {
	// ConfigFile is the AgentConfig to read.
	ConfigFile string
	// Kubeconfig is the local cluster's kubeconfig; empty means $KUBECONFIG, then the
	// in-cluster service account.
	Kubeconfig string
	// Namespace is where mcnet runs; empty means $POD_NAMESPACE, then mcnet-system.
	Namespace string
	// LogLevel is the log verbosity: V(n) lines are logged at -v n and above.
	LogLevel int
}

// AddFlags registers the shared flags on fs.
func (p *Process) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&p.ConfigFile, "config", mcnetv1.AgentConfigPath, "the cluster's AgentConfig (rendered into Git as ConfigMap "+mcnetv1.AgentConfigMap+")")
	fs.StringVar(&p.Kubeconfig, "kubeconfig", "", "kubeconfig of this cluster (default: $KUBECONFIG, then in-cluster)")
	fs.StringVar(&p.Namespace, "namespace", "", "namespace mcnet runs in (default: $POD_NAMESPACE, then "+mcnetv1.SystemNamespace+")")
	fs.IntVarP(&p.LogLevel, "v", "v", 0, "log verbosity")
}

// Complete fills in the namespace from the environment and loads the config file.
func (p *Process) Complete() (*mcnetv1.AgentConfig, error) {
	if p.Namespace == "" {
		p.Namespace = os.Getenv("POD_NAMESPACE")
	}
	if p.Namespace == "" {
		p.Namespace = mcnetv1.SystemNamespace
	}
	return Load(p.ConfigFile)
}

// Logger returns the process's logger at the chosen verbosity and routes klog
// (client-go) and controller-runtime into it, so the process logs in one format.
func (p *Process) Logger() logr.Logger {
	l := zap.New(zap.Level(zapcore.Level(-p.LogLevel)))
	logging.Route(l, p.LogLevel)
	return l
}

// ParseFlags parses a binary's arguments into fs. It returns false when the
// process should end with code: 0 after --help, 2 after a bad flag (pflag has said
// which).
func ParseFlags(fs *pflag.FlagSet, args []string) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected arguments %q\n", fs.Name(), fs.Args())
		return 2, false
	}
	return 0, true
}
