// Command coredns is CoreDNS with the plugins the lab's cluster DNS Deployment needs, so the
// end-to-end tests resolve clusterset names the way applications do: through CoreDNS,
// which imports the server block kubectl mcnet render writes.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/file"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/whoami"
)

// directives are the plugins compiled in, in CoreDNS's execution order: what a
// cluster's DNS Deployment needs (kubernetes, health, ready), what the tests use, and
// file, which serves the DNS benchmark's zone so CoreDNS and mcnet answer the same
// records side by side.
var directives = []string{"ready", "health", "errors", "log", "cache", "kubernetes", "file", "forward", "whoami"}

func init() { dnsserver.Directives = directives }

func main() { coremain.Run() }
