// Package labcmd implements the mcnet-lab command behind `make lab` and
// `make lab-down`.
package labcmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mcnet-io/mcnet/e2e/fleetlab"
	"github.com/mcnet-io/mcnet/e2e/lab"
	"github.com/mcnet-io/mcnet/internal/fleet"
)

// ErrUsage marks bad command lines; main exits 2 on it.
var ErrUsage = errors.New("usage")

const usage = `usage: mcnet-lab up [-f FLEET] [--nodes N] [--nat CLUSTER,...] [--no-components]
       mcnet-lab down

up    brings up one lab cluster per cluster of the fleet (real etcd, kube-apiserver,
      kube-controller-manager and kube-proxy in network namespaces), renders the fleet
      with the render engine, applies it, runs mcnet's components from what was applied,
      prints how to reach each cluster, and stays until Ctrl-C, which removes everything.
down  removes labs left behind by killed runs and stops running 'mcnet-lab up's.
`

// Run executes the command line args (without the program name).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return ErrUsage
	}
	switch args[0] {
	case "up":
		return up(ctx, args[1:], stdout, stderr)
	case "down":
		if len(args) > 1 {
			fmt.Fprint(stderr, usage)
			return ErrUsage
		}
		if err := lab.CleanAll(ctx, stdout); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "no lab left")
		return nil
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("%w: unknown command %q", ErrUsage, args[0])
}

type upOptions struct {
	fleetFile    string
	nodes        int
	nat          string
	noComponents bool
}

func up(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	root, err := lab.RepoRoot("")
	if err != nil {
		return err
	}
	var o upOptions
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.fleetFile, "f", filepath.Join(root, "examples", "fleet.yaml"), "fleet file to render and apply")
	fs.IntVar(&o.nodes, "nodes", 2, "nodes per cluster (the first is the gateway)")
	fs.StringVar(&o.nat, "nat", "", "comma-separated clusters whose gateways sit behind NAT")
	fs.BoolVar(&o.noComponents, "no-components", false, "apply the fleet but do not wait for mcnet's components")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %v", ErrUsage, fs.Args())
	}

	cs, err := fleet.Load(o.fleetFile)
	if err != nil {
		return err
	}
	var nat []string
	if o.nat != "" {
		nat = strings.Split(o.nat, ",")
	}
	opts, err := fleetlab.LabOptions(cs, o.nodes, nat...)
	if err != nil {
		return err
	}
	if !o.noComponents {
		if err := componentImages(root); err != nil {
			return err
		}
	}
	opts.RepoRoot = root
	opts.Progress = stdout

	l, err := lab.Start(ctx, opts)
	if err != nil {
		// Start has removed what it created, or says it could not (lab.ErrStop).
		return interrupted(ctx, stdout, err)
	}
	// Stop with a fresh context: ctx is cancelled by the Ctrl-C that ends the lab. A
	// teardown that fails leaves namespaces, mounts or processes behind: that is the
	// command's error (exit 1), joined to any earlier one, not a line on stderr
	// after a clean exit.
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		fmt.Fprintln(stdout, "stopping the lab …")
		if serr := l.Stop(sctx); serr != nil {
			err = errors.Join(err, fmt.Errorf("stopping the lab (see mcnet-lab down to clean up): %w", serr))
		}
		err = interrupted(ctx, stdout, err)
	}()

	repo := filepath.Join(l.Dir, "fleet-repo")
	fmt.Fprintf(stdout, "rendering %s into %s and applying it\n", o.fleetFile, repo)
	if err := fleetlab.Install(ctx, l, cs, repo); err != nil {
		return err
	}
	if !o.noComponents {
		fmt.Fprintln(stdout, "waiting for mcnet's components …")
		if err := fleetlab.Wait(ctx, l, 2*time.Minute); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			fmt.Fprintf(stdout, "components are not all ready yet (the lab stays up; logs in %s):\n%v\n", l.LogDir, err)
		}
	}
	printSummary(stdout, l, repo, cs.Spec.Broker.Cluster)
	<-ctx.Done()
	return nil
}

// interrupted is the command's result once the lab is gone. Ctrl-C or SIGTERM (ctx
// cancelled) is how a user ends `mcnet-lab up`, at any point of its run: when the lab
// was then removed cleanly, the command succeeded, whatever the interruption made the
// step in progress return, so `make lab` reports no error. A teardown that left
// something behind (lab.ErrStop) stays an error, and so does any error of a run
// nobody interrupted.
func interrupted(ctx context.Context, stdout io.Writer, err error) error {
	if err == nil || ctx.Err() == nil || errors.Is(err, lab.ErrStop) {
		return err
	}
	if !errors.Is(err, context.Canceled) {
		fmt.Fprintf(stdout, "interrupted: %v\n", err)
	}
	return nil
}

// componentImages fails early, and clearly, when `make image` has not run.
func componentImages(root string) error {
	_, err := lab.FindImages(root)
	return err
}

func printSummary(w io.Writer, l *lab.Lab, repo, broker string) {
	fmt.Fprintf(w, "\nlab %s is up (logs: %s, rendered tree: %s)\n\n", l.RunID, l.LogDir, repo)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tKUBECONFIG\tAPI (WAN)\tPODS\tSERVICES\tNODES")
	for _, c := range l.Clusters() {
		var nodes []string
		for _, n := range c.Nodes {
			s := n.Name + "=" + n.IP.String()
			if n.Gateway {
				s += " (gateway, public " + n.PublicIP.String() + ")"
			}
			nodes = append(nodes, s)
		}
		name := c.Name
		if c.Name == broker {
			name += " (broker)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", name, c.Kubeconfig, c.PublicAPIServer, c.PodCIDR, c.ServiceCIDR, strings.Join(nodes, ", "))
	}
	tw.Flush()
	first, second := l.Clusters()[0], l.Clusters()[len(l.Clusters())-1]
	kubectl, _ := filepath.Rel(mustWd(), l.Kubectl())
	fmt.Fprintf(w, `
Every cluster is a context of one kubeconfig; the nodes are real kubelets with containerd.
  export KUBECONFIG=%[1]s
  K=%[2]s
  $K get nodes,pods -A -o wide --context %[3]s
  bin/kubectl-mcnet show

Try it with your own workload — a web server in %[3]s, exported, called from %[4]s:
  $K --context %[3]s create deployment web --image=%[5]s --port=8080 -- \
      socat TCP-LISTEN:8080,fork,reuseaddr SYSTEM:'echo HTTP/1.0 200 OK; echo; hostname'
  $K --context %[3]s expose deployment web --port=80 --target-port=8080
  bin/kubectl-mcnet --context %[3]s export svc/web -n default
  $K --context %[4]s run client --image=%[5]s -- sleep infinity
  $K --context %[4]s exec client -- curl -s http://web.default.svc.clusterset.local/
  $K --context %[4]s exec client -- dig +short web.default.svc.clusterset.local
Images: %[5]s holds socat, curl, dig, iperf3, ip, ping; docker.io, registry.k8s.io, ghcr.io
and quay.io are served from the lab's own registry on each node (only the lab's images).
Namespaces: sudo ip netns list | grep %[6]s; logs of every process: %[7]s.
Ctrl-C removes everything.
`, l.Kubeconfig(), kubectl, first.Name, second.Name, l.Images().NetTools, lab.Prefix+l.RunID, l.LogDir)
}

func mustWd() string {
	wd, _ := os.Getwd()
	return wd
}
