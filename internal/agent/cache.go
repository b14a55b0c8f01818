package agent

import (
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mcnet-io/mcnet/internal/patient"
)

// NewCache returns the cache of mcnet's namespace that the gateway and the route agent
// read from, and a client reading through it. Its informers wait out an API server
// outage instead of backing off for up to a minute. Nodes are cached with only the
// fields the agents read (SlimNode): every node caches every Node, so what a kubelet
// reports (images, conditions, heartbeats) would cost each agent O(nodes) of it. byObject
// narrows more kinds (a field selector, a transform).
func (o *Common) NewCache(cfg *rest.Config, byObject ...map[client.Object]cache.ByObject) (cache.Cache, client.Client, error) {
	informers, err := patient.ForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	scheme := Scheme()
	by := map[client.Object]cache.ByObject{&corev1.Node{}: {Transform: SlimNode}}
	for _, m := range byObject {
		maps.Copy(by, m)
	}
	c, err := cache.New(cfg, cache.Options{
		Scheme:            scheme,
		DefaultNamespaces: map[string]cache.Config{o.Namespace: {}},
		NewInformer:       informers,
		ByObject:          by,
		// Nobody reads managedFields; they are often the larger part of an object.
		DefaultTransform: cache.TransformStripManagedFields(),
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

// SlimNode keeps of a Node what the gateway and route agent read: its name, labels and
// annotations (gateway selector, public and health-check addresses), pod CIDRs and
// addresses. It is a cache transform (cache.ByObject.Transform).
func SlimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	return &corev1.Node{
		TypeMeta: n.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion, Generation: n.Generation,
			Labels: n.Labels, Annotations: n.Annotations, DeletionTimestamp: n.DeletionTimestamp,
		},
		Spec:   corev1.NodeSpec{PodCIDR: n.Spec.PodCIDR, PodCIDRs: n.Spec.PodCIDRs},
		Status: corev1.NodeStatus{Addresses: n.Status.Addresses},
	}, nil
}
