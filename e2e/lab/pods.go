package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/mcnet-io/mcnet/e2e/lab/network"
)

// Pod is a real pod: created through the API, placed by the scheduler, run by its
// node's kubelet and containerd from the lab's network-tools image.
type Pod struct {
	Name, Namespace string
	Node            *Node
	// Netns is the pod's network namespace: its node's namespace name for hostNetwork
	// pods, else the path of its container's namespace (/proc/PID/ns/net), which the
	// lab's Dial, Listen and Command enter.
	Netns string
	IP    netip.Addr
	// HostNetwork pods share their node's namespace and IP.
	HostNetwork bool
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
	// HostNetwork places the pod in the node's own namespace.
	HostNetwork bool
	// Image defaults to the network-tools image (Lab.Images); Command to one that sleeps until stopped.
	Image   string
	Command []string
}

// AddPod creates a pod on node n (through the scheduler, pinned by the node's hostname
// label) and returns once it runs and is Ready.
func (l *Lab) AddPod(ctx context.Context, n *Node, o PodOptions) (*Pod, error) {
	c := n.Cluster
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	if o.Image == "" {
		o.Image = l.imageRefs.NetTools
	}
	if len(o.Command) == 0 {
		o.Command = []string{"sleep", "infinity"}
	}
	if err := c.ensureNamespace(ctx, o.Namespace); err != nil {
		return nil, err
	}
	sa := o.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: o.Name, Namespace: o.Namespace, Labels: o.Labels},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{corev1.LabelHostname: n.Name},
			Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			HostNetwork:                   o.HostNetwork,
			ServiceAccountName:            sa,
			AutomountServiceAccountToken:  new(false),
			TerminationGracePeriodSeconds: new(int64(1)),
			Containers: []corev1.Container{{
				Name: "main", Image: o.Image, Command: o.Command, Ports: o.Ports,
				ImagePullPolicy: corev1.PullIfNotPresent,
				// The tools need raw sockets (ping) and to bind low ports; a test pod is
				// not a security boundary.
				SecurityContext: &corev1.SecurityContext{RunAsUser: new(int64(0)), Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}}},
			}},
		},
	}
	if o.HostNetwork {
		pod.Spec.DNSPolicy = corev1.DNSClusterFirstWithHostNet
	}
	if _, err := c.Client.CoreV1().Pods(o.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create pod %s/%s: %w", o.Namespace, o.Name, err)
	}
	p := &Pod{Name: o.Name, Namespace: o.Namespace, Node: n, HostNetwork: o.HostNetwork}
	if err := p.waitRunning(ctx, 90*time.Second); err != nil {
		return nil, err
	}
	c.lab.mu.Lock()
	c.pods = append(c.pods, p)
	c.lab.mu.Unlock()
	return p, nil
}

// waitRunning waits for the pod to be Ready and records its address, container and
// network namespace.
func (p *Pod) waitRunning(ctx context.Context, timeout time.Duration) error {
	c := p.Node.Cluster
	err := Eventually(ctx, timeout, func(ctx context.Context) error {
		obj, err := c.Client.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if err := podProblem(obj); err != nil {
			return err
		}
		ip, err := netip.ParseAddr(obj.Status.PodIP)
		if err != nil {
			return fmt.Errorf("pod %s has no IP yet", p)
		}
		cid := strings.TrimPrefix(obj.Status.ContainerStatuses[0].ContainerID, "containerd://")
		pid, err := p.Node.runtime.TaskPID(ctx, cid)
		if err != nil {
			return err
		}
		p.IP = ip
		p.Netns = p.Node.Netns
		if !p.HostNetwork {
			p.Netns = fmt.Sprintf("/proc/%d/ns/net", pid)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pod %s: %w", p, err)
	}
	return nil
}

// podProblem says why a pod is not running and ready, or nil. An image that cannot be
// pulled or a container that cannot be created is permanent: waiting does not help.
func podProblem(pod *corev1.Pod) error {
	for _, st := range append(append([]corev1.ContainerStatus(nil), pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
		if w := st.State.Waiting; w != nil {
			switch w.Reason {
			case "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError":
				return Permanent(fmt.Errorf("pod %s/%s container %s: %s: %s", pod.Namespace, pod.Name, st.Name, w.Reason, w.Message))
			}
			return fmt.Errorf("pod %s/%s container %s waiting: %s %s", pod.Namespace, pod.Name, st.Name, w.Reason, w.Message)
		}
	}
	if pod.Status.Phase != corev1.PodRunning {
		return fmt.Errorf("pod %s/%s is %s", pod.Namespace, pod.Name, pod.Status.Phase)
	}
	if len(pod.Status.ContainerStatuses) == 0 {
		return fmt.Errorf("pod %s/%s has no container status", pod.Namespace, pod.Name)
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status != corev1.ConditionTrue {
			return fmt.Errorf("pod %s/%s not Ready: %s", pod.Namespace, pod.Name, c.Message)
		}
	}
	return nil
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

// String names the pod as cluster/namespace/name.
func (p *Pod) String() string { return p.Node.Cluster.Name + "/" + p.Namespace + "/" + p.Name }

// Exec runs a command in the pod's container through the API server and the kubelet,
// as `kubectl exec` does, and returns its combined output; the error carries the
// output too.
func (p *Pod) Exec(ctx context.Context, cmd ...string) (string, error) {
	out, err := p.Node.Cluster.Exec(ctx, p.Namespace, p.Name, "main", cmd...)
	if err != nil {
		return out, fmt.Errorf("in pod %s: %w", p, err)
	}
	return out, nil
}

// Command returns an *exec.Cmd running a host program inside the pod's network
// namespace, for callers that stream output or run in the background (a ping stream
// that must not pay an exec round trip per packet).
func (p *Pod) Command(ctx context.Context, cmd ...string) *exec.Cmd {
	if p.HostNetwork {
		return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", p.Netns}, cmd...)...)
	}
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + p.Netns, "--"}, cmd...)...)
}

// Dial opens a connection from inside the pod, for TCP clients written in Go.
func (p *Pod) Dial(ctx context.Context, nw, addr string) (net.Conn, error) {
	return network.DialIn(ctx, p.Netns, nw, addr)
}

// Listen opens a listener inside the pod.
func (p *Pod) Listen(ctx context.Context, nw, addr string) (net.Listener, error) {
	return network.ListenIn(ctx, p.Netns, nw, addr)
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

// SetResolver makes the pod's /etc/resolv.conf name server ns with the given search
// domains, by rewriting the file the kubelet wrote into the container.
func (p *Pod) SetResolver(ctx context.Context, ns netip.Addr, search ...string) error {
	if p.HostNetwork {
		return fmt.Errorf("pod %s shares its node's namespace; set the resolver on a pod of its own", p)
	}
	conf := fmt.Sprintf("nameserver %s\n", ns)
	if len(search) > 0 {
		conf += "search " + strings.Join(search, " ") + "\n"
	}
	conf += "options ndots:5\n"
	_, err := p.Exec(ctx, "sh", "-c", "cat > /etc/resolv.conf <<'EOF'\n"+conf+"EOF")
	return err
}
