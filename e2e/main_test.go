package e2e

import (
	"os"
	"testing"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// TestMain gives controller-runtime's clients, which the tests use to read mcnet's
// objects, a logger that drops their messages: otherwise the first client prints a
// "log.SetLogger(...) was never called" stack trace into every run. The tests report
// what they find through testing.T.
func TestMain(m *testing.M) {
	ctrllog.SetLogger(logr.Discard())
	os.Exit(m.Run())
}
