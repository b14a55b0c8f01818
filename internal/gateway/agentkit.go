package gateway

import (
	"context"
	"fmt"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/patient"
	"github.com/mcnet-io/mcnet/internal/probe"
)

// NewCache returns the cache of mcnet's namespace that the gateway and the route agent
// read from, and a client reading through it. Its informers wait out an API server
// outage instead of backing off for up to a minute.
func (o *Common) NewCache(cfg *rest.Config) (cache.Cache, client.Client, error) {
	informers, err := patient.ForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	scheme := Scheme()
	c, err := cache.New(cfg, cache.Options{
		Scheme:            scheme,
		DefaultNamespaces: map[string]cache.Config{o.Namespace: {}},
		NewInformer:       informers,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("cache: %w", err)
	}
	cl, err := client.New(cfg, client.Options{Scheme: scheme, Cache: &client.CacheOptions{Reader: c}})
	if err != nil {
		return nil, nil, fmt.Errorf("client: %w", err)
	}
	return c, cl, nil
}

// ServeNetworkTests answers, in the background until ctx ends, the NetworkTests
// (benchmarks, diagnose probes) addressed to this node and agent.
func (o *Common) ServeNetworkTests(ctx context.Context, log logr.Logger, cfg *rest.Config, agent mcnetv1.Agent) error {
	wc, err := client.NewWithWatch(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		return err
	}
	go func() {
		_ = probe.RunAgent(logr.NewContext(ctx, log), wc, probe.AgentOptions{
			Namespace: o.Namespace, NodeName: o.NodeName, Agent: agent,
		})
	}()
	return nil
}
