package gateway

import (
	"context"
	"time"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

// shutdown runs after the Lease was handed over (election.Elector.HandOver). A
// restart keeps the kernel state and the Gateway status (still active, connections
// as the next process's starting point); otherwise the gateway reports passive and,
// when it is being uninstalled, removes its kernel state.
func (g *Gateway) shutdown(ctx context.Context, restart, uninstall bool) error {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	switch {
	case restart:
		// The status stays true for the next process through the restart grace, as the
		// Lease does; if no process comes back, readers stop believing it then.
		if g.gwObj != nil && g.opts.RestartGrace > 0 {
			g.extendStatus(sctx, g.opts.RestartGrace)
		}
		g.log.Info("Gateway stopped for a restart; Lease, status and kernel state kept for the next start")
		return nil
	case uninstall:
		g.log.Info("Gateway DaemonSet removed: cleaning up the node's kernel state")
		return g.dp.Cleanup(sctx)
	}
	if g.wasActive {
		g.writeStatus(sctx, mcnetv1.HAPassive, nil, sortedConns(g.conns))
	}
	g.log.Info("Gateway stopped; kernel state kept")
	return nil
}
