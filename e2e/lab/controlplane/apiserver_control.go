package controlplane

import (
	"context"
	"fmt"
	"time"

	"github.com/mcnet-io/mcnet/e2e/lab/proc"
)

// StopAPIServer stops the kube-apiserver as an outage would: etcd, the controller
// manager, the scheduler, and whatever runs on the cluster's nodes keep running, and
// clients see connections refused until StartAPIServer.
func (c *ControlPlane) StopAPIServer(ctx context.Context) error {
	p := c.apiServerProc()
	if p == nil {
		return fmt.Errorf("cluster %s: the API server is not running", c.cfg.Name)
	}
	return p.Stop(ctx, 5*time.Second)
}

// StartAPIServer starts the kube-apiserver again with the flags it first ran with and
// waits until it is ready.
func (c *ControlPlane) StartAPIServer(ctx context.Context) error {
	if c.apiServerProc() != nil {
		return fmt.Errorf("cluster %s: the API server is already running", c.cfg.Name)
	}
	p, err := c.startAPIServer()
	if err != nil {
		return err
	}
	return c.waitReady(ctx, p)
}

// apiServerProc is the running API server process, nil if none.
func (c *ControlPlane) apiServerProc() *proc.Process {
	for _, p := range c.procs.All() {
		if p.Name() == c.cfg.Name+"/kube-apiserver" && !p.Exited() {
			return p
		}
	}
	return nil
}
