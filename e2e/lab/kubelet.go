package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// WorkloadNamespace is where the kubelet-lite looks for Deployments and DaemonSets.
const WorkloadNamespace = "mcnet-system"

// kubelet is the lab's stand-in for kubelets and the DaemonSet and Deployment
// controllers of one cluster: it places the pods of every Deployment and DaemonSet in
// WorkloadNamespace on nodes, registers them as Pod objects and runs their containers
// as processes in the node's namespace (hostNetwork) or a pod namespace of its own.
//
// Placement: a DaemonSet gets one pod on each node matching its nodeSelector; a
// Deployment's replicas go to matching nodes that are up, round-robin, workers before
// gateways, and stay there. A changed pod template replaces the pod (on the same node);
// a deleted workload removes it.
type kubelet struct {
	c       *Cluster
	factory informers.SharedInformerFactory
	nodeInf informers.SharedInformerFactory
	ds      appslisters.DaemonSetLister
	deploy  appslisters.DeploymentLister
	secrets corelisters.SecretLister
	cms     corelisters.ConfigMapLister
	nodes   corelisters.NodeLister

	cancel  context.CancelFunc
	done    chan struct{}
	trigger chan struct{}

	mu   sync.Mutex
	pods map[string]*labPod // by pod name

	cmu     sync.Mutex
	changed chan struct{} // closed and replaced when a node goes up or down
}

// nodeChange returns a channel closed at the next node power change.
func (k *kubelet) nodeChange() <-chan struct{} {
	k.cmu.Lock()
	defer k.cmu.Unlock()
	if k.changed == nil {
		k.changed = make(chan struct{})
	}
	return k.changed
}

func (k *kubelet) broadcastNodeChange() {
	k.cmu.Lock()
	defer k.cmu.Unlock()
	if k.changed != nil {
		close(k.changed)
		k.changed = nil
	}
}

// startKubelet starts the cluster's kubelet-lite; it runs until stop.
func (c *Cluster) startKubelet(ctx context.Context) (*kubelet, error) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	k := &kubelet{
		c: c, cancel: cancel, done: make(chan struct{}), trigger: make(chan struct{}, 1),
		pods: map[string]*labPod{},
	}
	k.factory = informers.NewSharedInformerFactoryWithOptions(c.Client, 0, informers.WithNamespace(WorkloadNamespace))
	k.nodeInf = informers.NewSharedInformerFactory(c.Client, 0)
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { k.kick() },
		UpdateFunc: func(any, any) { k.kick() },
		DeleteFunc: func(any) { k.kick() },
	}
	for _, inf := range []cache.SharedIndexInformer{
		k.factory.Apps().V1().DaemonSets().Informer(),
		k.factory.Apps().V1().Deployments().Informer(),
		k.factory.Core().V1().Secrets().Informer(),
		k.factory.Core().V1().ConfigMaps().Informer(),
		k.nodeInf.Core().V1().Nodes().Informer(),
	} {
		if _, err := inf.AddEventHandler(handler); err != nil {
			cancel()
			return nil, err
		}
	}
	k.ds = k.factory.Apps().V1().DaemonSets().Lister()
	k.deploy = k.factory.Apps().V1().Deployments().Lister()
	k.secrets = k.factory.Core().V1().Secrets().Lister()
	k.cms = k.factory.Core().V1().ConfigMaps().Lister()
	k.nodes = k.nodeInf.Core().V1().Nodes().Lister()
	k.factory.Start(ctx.Done())
	k.nodeInf.Start(ctx.Done())
	for typ, ok := range k.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			cancel()
			return nil, fmt.Errorf("cluster %s kubelet: sync %v", c.Name, typ)
		}
	}
	k.nodeInf.WaitForCacheSync(ctx.Done())
	go k.loop(ctx)
	return k, nil
}

func (k *kubelet) kick() {
	select {
	case k.trigger <- struct{}{}:
	default:
	}
}

func (k *kubelet) loop(ctx context.Context) {
	defer close(k.done)
	// A slow resync too, for what informers do not see (a node brought back up).
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		k.reconcile(ctx)
		k.updateWorkloadStatus(ctx)
		select {
		case <-ctx.Done():
			return
		case <-k.trigger:
		case <-tick.C:
		}
	}
}

// podPlan is one pod the kubelet wants running.
type podPlan struct {
	name     string
	owner    metav1.OwnerReference
	workload string // the Deployment or DaemonSet name, what Kill and Restart take
	node     *Node
	template corev1.PodTemplateSpec
	hash     string
}

func (k *kubelet) desired() map[string]podPlan {
	want := map[string]podPlan{}
	dss, _ := k.ds.DaemonSets(WorkloadNamespace).List(labels.Everything())
	for _, ds := range dss {
		if ds.DeletionTimestamp != nil {
			continue
		}
		owner := *metav1.NewControllerRef(ds, appsv1.SchemeGroupVersion.WithKind("DaemonSet"))
		for _, n := range k.eligible(ds.Spec.Template.Spec) {
			name := ds.Name + "-" + n.Name
			want[name] = plan(name, ds.Name, owner, n, ds.Spec.Template)
		}
	}
	ds, _ := k.deploy.Deployments(WorkloadNamespace).List(labels.Everything())
	for _, d := range ds {
		if d.DeletionTimestamp != nil {
			continue
		}
		replicas := 1
		if d.Spec.Replicas != nil {
			replicas = int(*d.Spec.Replicas)
		}
		nodes := k.eligible(d.Spec.Template.Spec)
		// Workers first, as a scheduler spreading load off gateways would.
		slices.SortStableFunc(nodes, func(a, b *Node) int {
			switch {
			case a.Gateway == b.Gateway:
				return 0
			case b.Gateway:
				return -1
			}
			return 1
		})
		if len(nodes) == 0 {
			continue
		}
		// New replicas go to nodes that are up; a placed replica stays where it is
		// while its node still matches, as a scheduled pod does (nothing evicts it).
		up := slices.DeleteFunc(slices.Clone(nodes), (*Node).isDown)
		if len(up) == 0 {
			up = nodes
		}
		owner := *metav1.NewControllerRef(d, appsv1.SchemeGroupVersion.WithKind("Deployment"))
		for r := range replicas {
			name := fmt.Sprintf("%s-%d", d.Name, r)
			node := up[r%len(up)]
			if cur := k.placed(name); cur != nil && slices.Contains(nodes, cur) {
				node = cur
			}
			want[name] = plan(name, d.Name, owner, node, d.Spec.Template)
		}
	}
	return want
}

// placed returns the node a running pod was placed on, or nil.
func (k *kubelet) placed(name string) *Node {
	k.mu.Lock()
	defer k.mu.Unlock()
	if p, ok := k.pods[name]; ok {
		return p.plan.node
	}
	return nil
}

func plan(name, workload string, owner metav1.OwnerReference, n *Node, t corev1.PodTemplateSpec) podPlan {
	b, _ := json.Marshal(t)
	sum := sha256.Sum256(b)
	return podPlan{name: name, owner: owner, workload: workload, node: n, template: t, hash: hex.EncodeToString(sum[:8])}
}

// eligible lists the lab's nodes whose Node labels match the pod's
// nodeSelector (required node affinity is not evaluated).
func (k *kubelet) eligible(spec corev1.PodSpec) []*Node {
	sel := labels.SelectorFromSet(spec.NodeSelector)
	var out []*Node
	for _, n := range k.c.Nodes {
		obj, err := k.nodes.Get(n.Name)
		// A node that is down keeps its pods, as without a node lifecycle controller
		// nothing evicts them; their containers wait for the node to come back.
		if err != nil || !sel.Matches(labels.Set(obj.Labels)) {
			continue
		}
		out = append(out, n)
	}
	return out
}

func (k *kubelet) reconcile(ctx context.Context) {
	want := k.desired()
	k.mu.Lock()
	var gone []*labPod
	for name, p := range k.pods {
		if w, ok := want[name]; !ok || w.hash != p.plan.hash || w.node != p.plan.node {
			gone = append(gone, p)
			delete(k.pods, name)
		}
	}
	k.mu.Unlock()
	// Stop outside the lock (a container may take its grace period), but before
	// starting replacements, which reuse the names.
	var wg sync.WaitGroup
	for _, p := range gone {
		wg.Add(1)
		go func() { defer wg.Done(); p.stop(ctx) }()
	}
	wg.Wait()

	names := make([]string, 0, len(want))
	for name := range want {
		names = append(names, name)
	}
	sort.Strings(names)
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, name := range names {
		if _, ok := k.pods[name]; !ok {
			k.pods[name] = k.startPod(ctx, want[name])
		} else {
			k.pods[name].refreshVolumes()
		}
	}
}

func (k *kubelet) stop(ctx context.Context) error {
	k.cancel()
	<-k.done
	k.mu.Lock()
	defer k.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range k.pods {
		wg.Add(1)
		go func() { defer wg.Done(); p.stop(ctx) }()
	}
	wg.Wait()
	k.pods = map[string]*labPod{}
	return nil
}

// find returns the pods of a workload, on one node if node is not empty.
func (k *kubelet) find(workload, node string) []*labPod {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []*labPod
	for _, p := range k.pods {
		if p.plan.workload == workload && (node == "" || p.plan.node.Name == node) {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].plan.name < out[j].plan.name })
	return out
}

func (k *kubelet) all() []*labPod {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]*labPod, 0, len(k.pods))
	for _, p := range k.pods {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].plan.name < out[j].plan.name })
	return out
}

// deletePodObject removes a Pod object and waits until it is gone, so a replacement
// with the same name can be created.
func (c *Cluster) deletePodObject(ctx context.Context, name string) error {
	pods := c.Client.CoreV1().Pods(WorkloadNamespace)
	err := pods.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64(0))})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
		_, err := pods.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return errors.Join(err, fmt.Errorf("pod %s still exists", name))
	})
}

func (n *Node) isDown() bool {
	n.Cluster.lab.mu.Lock()
	defer n.Cluster.lab.mu.Unlock()
	return n.down
}
