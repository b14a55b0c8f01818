package lab

import (
	"context"
	"fmt"
	"time"
)

// StopAPIServer stops the cluster's kube-apiserver as an outage would: etcd, the
// controller manager, kube-proxy and every pod keep running, and clients see
// connections refused until StartAPIServer.
func (c *Cluster) StopAPIServer(ctx context.Context) error {
	p := c.apiServerProc()
	if p == nil {
		return fmt.Errorf("cluster %s: the API server is not running", c.Name)
	}
	return p.stop(ctx, 5*time.Second)
}

// StartAPIServer starts the cluster's kube-apiserver again with the flags it first
// ran with and waits until it is ready.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	if c.apiServerProc() != nil {
		return fmt.Errorf("cluster %s: the API server is already running", c.Name)
	}
	p, err := c.startAPIServer()
	if err != nil {
		return err
	}
	return c.waitReady(ctx, p)
}

// apiServerProc is the running API server process, nil if none.
func (c *Cluster) apiServerProc() *proc {
	for _, p := range c.procs.all() {
		if p.name == c.Name+"/kube-apiserver" && !p.exited() {
			return p
		}
	}
	return nil
}
