package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/mcnet-io/mcnet/internal/cidr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Pod is a network namespace behind a routed veth of its node, registered as a Pod
// object whose status says Running and Ready.
type Pod struct {
	Name, Namespace string
	Node            *Node
	Netns           string
	IP              netip.Addr
	// HostNetwork pods share their node's namespace and IP.
	HostNetwork bool
	uid         string
}

// PodOptions describe a pod to add.
type PodOptions struct {
	// Name and Namespace of the Pod object; Namespace defaults to "default" and is
	// created if missing.
	Name, Namespace string
	// Labels select the pod into Services.
	Labels map[string]string
	// Ports are listed in the pod's single container, for named target ports.
	Ports []corev1.ContainerPort
	// ServiceAccountName is recorded in the Pod spec (default "default").
	ServiceAccountName string
	// HostNetwork places the "pod" in the node's own namespace.
	HostNetwork bool
}

// AddPod creates a pod on node n and registers it.
func (l *Lab) AddPod(ctx context.Context, n *Node, o PodOptions) (*Pod, error) {
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	p, err := n.addPodNetns(ctx, o.HostNetwork)
	if err != nil {
		return nil, err
	}
	p.Name, p.Namespace = o.Name, o.Namespace
	if err := n.Cluster.registerPod(ctx, p, o); err != nil {
		return nil, err
	}
	return p, nil
}

// addPodNetns creates the pod's namespace and veth, with the next free address of the
// node's slice. The node end of every veth carries the slice's first address as a /32,
// so each pod's gateway is the same address and all pod traffic is routed (not bridged)
// through the node, where kube-proxy's rules and conntrack see both directions.
func (n *Node) addPodNetns(ctx context.Context, hostNetwork bool) (*Pod, error) {
	c := n.Cluster
	if hostNetwork {
		return &Pod{Node: n, Netns: n.Netns, IP: n.IP, HostNetwork: true}, nil
	}
	c.lab.mu.Lock()
	if c.lab.stopped {
		c.lab.mu.Unlock()
		return nil, fmt.Errorf("lab %s is stopped", c.lab.RunID)
	}
	c.podSeq++
	seq := c.podSeq
	n.podIPSeq++
	ip := cidr.Nth(n.PodCIDR, 1+n.podIPSeq)
	c.lab.mu.Unlock()
	if !n.PodCIDR.Contains(ip) || ip == cidr.Last(n.PodCIDR) {
		return nil, fmt.Errorf("node %s: pod CIDR %s is full", n.Name, n.PodCIDR)
	}
	p := &Pod{Node: n, Netns: c.lab.netnsName(fmt.Sprintf("%s-pod%d", c.Name, seq)), IP: ip}
	if err := c.lab.addNetns(ctx, p.Netns); err != nil {
		return nil, err
	}
	gw := cidr.Nth(n.PodCIDR, 1)
	veth := fmt.Sprintf("p%d", seq)
	if err := ipBatch(ctx, n.Netns, []string{
		fmt.Sprintf("link add %s type veth peer name eth0 netns %s", veth, p.Netns),
		fmt.Sprintf("addr add %s/32 dev %s", gw, veth),
		fmt.Sprintf("link set %s up", veth),
		fmt.Sprintf("route add %s/32 dev %s", ip, veth),
	}); err != nil {
		return nil, fmt.Errorf("pod on %s: %w", n.Name, err)
	}
	if err := ipBatch(ctx, p.Netns, []string{
		fmt.Sprintf("addr add %s/32 dev eth0", ip),
		"link set eth0 up",
		fmt.Sprintf("route add %s dev eth0 scope link", gw),
		fmt.Sprintf("route add default via %s dev eth0", gw),
	}); err != nil {
		return nil, fmt.Errorf("pod on %s: %w", n.Name, err)
	}
	return p, nil
}

// ensureNamespace creates a namespace and its default service account, which the
// ServiceAccount admission plugin wants before it admits a pod; the controller
// manager would create it too, but a test should not wait for that.
func (c *Cluster) ensureNamespace(ctx context.Context, ns string) error {
	_, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err := ignoreExists(err); err != nil {
		return fmt.Errorf("create namespace %s: %w", ns, err)
	}
	_, err = c.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	if err := ignoreExists(err); err != nil {
		return fmt.Errorf("create service account %s/default: %w", ns, err)
	}
	return nil
}

func (c *Cluster) registerPod(ctx context.Context, p *Pod, o PodOptions) error {
	if err := c.ensureNamespace(ctx, p.Namespace); err != nil {
		return err
	}
	sa := o.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, Labels: o.Labels},
		Spec: corev1.PodSpec{
			NodeName:                     p.Node.Name,
			HostNetwork:                  p.HostNetwork,
			ServiceAccountName:           sa,
			AutomountServiceAccountToken: new(false),
			Containers:                   []corev1.Container{{Name: "main", Image: "lab.mcnet.io/netns", Ports: o.Ports}},
		},
	}
	created, err := c.Client.CoreV1().Pods(p.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("register pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	p.uid = string(created.UID)
	created.Status = p.status(true)
	if _, err := c.Client.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("register pod %s/%s status: %w", p.Namespace, p.Name, err)
	}
	c.lab.mu.Lock()
	c.pods = append(c.pods, p)
	c.lab.mu.Unlock()
	return nil
}

func (p *Pod) status(ready bool) corev1.PodStatus {
	cond := corev1.ConditionTrue
	if !ready {
		cond = corev1.ConditionFalse
	}
	now := metav1.Now()
	return corev1.PodStatus{
		Phase:  corev1.PodRunning,
		HostIP: p.Node.IP.String(), HostIPs: []corev1.HostIP{{IP: p.Node.IP.String()}},
		PodIP: p.IP.String(), PodIPs: []corev1.PodIP{{IP: p.IP.String()}},
		StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: cond, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: cond, LastTransitionTime: now},
		},
	}
}

// SetReady flips the pod's Ready condition, which takes it in or out of EndpointSlices.
func (p *Pod) SetReady(ctx context.Context, ready bool) error {
	client := p.Node.Cluster.Client.CoreV1().Pods(p.Namespace)
	pod, err := client.Get(ctx, p.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	st := p.status(ready)
	st.StartTime = pod.Status.StartTime
	pod.Status = st
	if _, err := client.UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("set pod %s/%s ready=%v: %w", p.Namespace, p.Name, ready, err)
	}
	return nil
}

// String names the pod as cluster/namespace/name.
func (p *Pod) String() string { return p.Node.Cluster.Name + "/" + p.Namespace + "/" + p.Name }

// Exec runs a command inside the pod's network namespace and returns its combined
// output; the error carries the output too.
func (p *Pod) Exec(ctx context.Context, cmd ...string) (string, error) {
	out, err := output(ctx, "ip", append([]string{"netns", "exec", p.Netns}, cmd...)...)
	if err != nil {
		return out, fmt.Errorf("in pod %s: %w", p, err)
	}
	return out, nil
}

// Command returns an *exec.Cmd running inside the pod's namespace, for callers that
// stream output or run in the background.
func (p *Pod) Command(ctx context.Context, cmd ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", p.Netns}, cmd...)...)
}

// Dial opens a connection from inside the pod, for TCP clients written in Go.
func (p *Pod) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return dialIn(ctx, p.Netns, network, addr)
}

// Listen opens a listener inside the pod.
func (p *Pod) Listen(ctx context.Context, network, addr string) (net.Listener, error) {
	return listenIn(ctx, p.Netns, network, addr)
}

// ServiceOptions describe a Service.
type ServiceOptions struct {
	Name, Namespace string
	Selector        map[string]string
	// Ports maps port to target port, TCP.
	Ports map[int32]int32
	// UDPPorts maps port to target port, UDP.
	UDPPorts map[int32]int32
	// Headless creates a Service with ClusterIP None.
	Headless bool
}

// CreateService creates a Service and returns it with its ClusterIP assigned.
func (c *Cluster) CreateService(ctx context.Context, o ServiceOptions) (*corev1.Service, error) {
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	if err := c.ensureNamespace(ctx, o.Namespace); err != nil {
		return nil, err
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: o.Name, Namespace: o.Namespace},
		Spec:       corev1.ServiceSpec{Selector: o.Selector},
	}
	if o.Headless {
		svc.Spec.ClusterIP = corev1.ClusterIPNone
	}
	for port, target := range o.Ports {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{
			Name: fmt.Sprintf("tcp-%d", port), Protocol: corev1.ProtocolTCP, Port: port, TargetPort: intstr.FromInt32(target),
		})
	}
	for port, target := range o.UDPPorts {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{
			Name: fmt.Sprintf("udp-%d", port), Protocol: corev1.ProtocolUDP, Port: port, TargetPort: intstr.FromInt32(target),
		})
	}
	created, err := c.Client.CoreV1().Services(o.Namespace).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create service %s/%s: %w", o.Namespace, o.Name, err)
	}
	return created, nil
}

// Pods returns the pods added so far.
func (c *Cluster) Pods() []*Pod {
	c.lab.mu.Lock()
	defer c.lab.mu.Unlock()
	return append([]*Pod(nil), c.pods...)
}

// Eventually polls cond every interval until it returns nil or the timeout passes, and
// returns the last error. Tests use it instead of sleeping. A condition ends the wait
// early by returning an error that wraps Permanent.
func Eventually(ctx context.Context, timeout time.Duration, cond func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	interval := 50 * time.Millisecond
	for {
		err := cond(ctx)
		if err == nil {
			return nil
		}
		if p := (*permanent)(nil); errors.As(err, &p) {
			return p.err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s: %w", timeout, err)
		case <-time.After(interval):
		}
		interval = min(interval*2, time.Second)
	}
}

// SetResolver makes the pod's /etc/resolv.conf name server ns (for example the ClusterIP
// of mcnet's DNS Service) with the given search domains, so `dig name` and other
// resolvers work without @server. It uses `ip netns exec`'s convention of bind-mounting
// /etc/netns/NAME/resolv.conf, so it applies to commands run with Exec and Command.
func (p *Pod) SetResolver(ns netip.Addr, search ...string) error {
	if p.HostNetwork {
		return fmt.Errorf("pod %s shares its node's namespace; set the resolver on a pod of its own", p)
	}
	dir := filepath.Join(etcNetns, p.Netns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	conf := fmt.Sprintf("nameserver %s\n", ns)
	if len(search) > 0 {
		conf += "search " + strings.Join(search, " ") + "\n"
	}
	conf += "options ndots:5\n"
	return os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(conf), 0o644)
}

// etcNetns is where `ip netns exec` looks for per-namespace /etc files.
const etcNetns = "/etc/netns"
