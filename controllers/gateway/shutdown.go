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
		g.announceRestart()
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

// announceRestart tells the remote gateways whose cables stay in the kernel across
// the restart (VXLAN) to hold their connections through it (see prober): the next
// process answers their probes within the restart grace. The userspace WireGuard
// device dies with this process, and with it the traffic until the next process
// recreates it and hands shake again: those remotes are told nothing and see the gap
// as it is.
func (g *Gateway) announceRestart() {
	if !g.wasActive || g.opts.RestartGrace <= 0 {
		return
	}
	var kept []string
	for c, conn := range g.conns {
		if conn.Cable == mcnetv1.CableVXLAN && conn.Status == mcnetv1.Connected {
			kept = append(kept, c)
		}
	}
	to := g.prober.targetAddrs(kept)
	g.prober.announceRestart(to, g.opts.RestartGrace)
	if len(to) > 0 {
		g.log.Info("Restart announced to the remote gateways", "clusters", kept, "hold", g.opts.RestartGrace)
	}
}
