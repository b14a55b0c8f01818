// Package logging makes one logger the only one of a process. client-go logs through
// klog (leader election's "error retrieving resource lock" every retry, reflector
// errors, client-side throttling, request traces) and controller-runtime through its
// own delegating logger; left alone, each prints in a format of its own, so one
// failing Lease shows up as unstructured klog lines between mcnet's JSON or console
// lines. Route sends both into the process's logger.
package logging

import (
	"flag"
	"strconv"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// Route makes l the sink of klog and of controller-runtime, with klog's V(n) lines
// shown at verbosity n and above, as mcnet's own are. It may be called again (the CLI
// does once per command, the tests once per run): the last logger wins.
func Route(l logr.Logger, verbosity int) {
	klog.SetLogger(l)
	// klog filters V(n) itself before a line reaches l; its threshold is only settable
	// through its flags.
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("v", strconv.Itoa(verbosity))
	// controller-runtime takes a logger only once per process; klogr forwards to
	// whatever klog's logger is at the time of each line, so a later Route still holds.
	ctrllog.SetLogger(klog.NewKlogr())
}
