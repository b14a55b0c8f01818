package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// FieldManager is the server-side apply field manager of everything the lab applies.
const FieldManager = "mcnet-lab"

// ApplyKustomization builds the kustomization in dir (as `kustomize build` would) and
// applies the result server-side.
func (c *Cluster) ApplyKustomization(ctx context.Context, dir string) error {
	objs, err := BuildKustomization(dir)
	if err != nil {
		return err
	}
	return c.Apply(ctx, objs...)
}

// BuildKustomization runs kustomize on dir with its default (Argo CD and Flux
// compatible) load restrictions.
func BuildKustomization(dir string) ([]*unstructured.Unstructured, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var out []*unstructured.Unstructured
	for _, r := range rm.Resources() {
		m, err := r.Map()
		if err != nil {
			return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
	return out, nil
}

// ApplyYAML applies a multi-document YAML stream server-side.
func (c *Cluster) ApplyYAML(ctx context.Context, y []byte) error {
	objs, err := DecodeYAML(y)
	if err != nil {
		return err
	}
	return c.Apply(ctx, objs...)
}

// DecodeYAML splits a multi-document YAML stream into objects.
func DecodeYAML(y []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(y), 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("decode YAML: %w", err)
		}
		if len(m) > 0 {
			out = append(out, &unstructured.Unstructured{Object: m})
		}
	}
}

// Apply applies objects server-side in the order a GitOps tool would: CRDs first (and
// waits until they are served), then namespaces, then the rest.
func (c *Cluster) Apply(ctx context.Context, objs ...*unstructured.Unstructured) error {
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(c.Config)
	if err != nil {
		return err
	}
	cached := memory.NewMemCacheClient(dc)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(cached)

	rank := func(u *unstructured.Unstructured) int {
		switch u.GroupVersionKind().GroupKind().String() {
		case "CustomResourceDefinition.apiextensions.k8s.io":
			return 0
		case "Namespace":
			return 1
		}
		return 2
	}
	var errs []error
	for phase := range 3 {
		var crds []string
		for _, u := range objs {
			if rank(u) != phase {
				continue
			}
			if err := applyOne(ctx, dyn, mapper, u); err != nil {
				errs = append(errs, err)
				continue
			}
			if phase == 0 {
				crds = append(crds, u.GetName())
			}
		}
		if len(crds) > 0 {
			if err := waitEstablished(ctx, dyn, crds); err != nil {
				return err
			}
			cached.Invalidate()
			mapper.Reset()
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cluster %s apply: %w", c.Name, err)
	}
	return nil
}

func applyOne(ctx context.Context, dyn dynamic.Interface, mapper meta.RESTMapper, u *unstructured.Unstructured) error {
	gvk := u.GroupVersionKind()
	var m *meta.RESTMapping
	// A kind may appear only once its CRD is served; retry briefly.
	err := Eventually(ctx, 20*time.Second, func(context.Context) error {
		var err error
		m, err = mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			if r, ok := mapper.(interface{ Reset() }); ok {
				r.Reset()
			}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("%s %s: %w", gvk.Kind, u.GetName(), err)
	}
	var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		ns := u.GetNamespace()
		if ns == "" {
			ns = "default"
		}
		ri = dyn.Resource(m.Resource).Namespace(ns)
	}
	if _, err := ri.Apply(ctx, u.GetName(), u, metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil {
		return fmt.Errorf("apply %s %s/%s: %w", gvk.Kind, u.GetNamespace(), u.GetName(), err)
	}
	return nil
}

func waitEstablished(ctx context.Context, dyn dynamic.Interface, names []string) error {
	gvr := apiextensionsv1.SchemeGroupVersion.WithResource("customresourcedefinitions")
	return Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
		for _, n := range names {
			u, err := dyn.Resource(gvr).Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				return err
			}
			var crd apiextensionsv1.CustomResourceDefinition
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &crd); err != nil {
				return err
			}
			established := false
			for _, c := range crd.Status.Conditions {
				if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
					established = true
				}
			}
			if !established {
				return fmt.Errorf("CRD %s not established", n)
			}
		}
		return nil
	})
}
