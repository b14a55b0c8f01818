package lab

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// labPod is a pod the kubelet-lite runs: its namespace, Pod object and containers.
type labPod struct {
	k    *kubelet
	plan podPlan
	dir  string // per-pod directory: token, kubeconfig, secret and configMap volumes

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	pod        *Pod
	uid        string
	containers map[string]*containerState
	volumes    map[string]string // volume name → directory
	waiting    error             // why containers are not running yet
}

type containerState struct {
	proc     *proc
	restarts int32
	ready    bool // readiness probe state (true without a probe)
	kill     chan syscall.Signal
	waiting  string
}

func (k *kubelet) startPod(ctx context.Context, pl podPlan) *labPod {
	ctx, cancel := context.WithCancel(ctx)
	p := &labPod{
		k: k, plan: pl, ctx: ctx, cancel: cancel,
		dir:        filepath.Join(k.c.dir, "pods", pl.name),
		containers: map[string]*containerState{},
	}
	for _, ctr := range pl.template.Spec.Containers {
		p.containers[ctr.Name] = &containerState{kill: make(chan syscall.Signal, 1), waiting: "ContainerCreating"}
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.run(ctx)
	}()
	return p
}

// run sets the pod up, retrying what may heal (a Secret not created yet, an API error),
// then supervises its containers until the pod is stopped.
func (p *labPod) run(ctx context.Context) {
	c := p.k.c
	log := c.logPath(p.plan.name, p.plan.node.Name)
	backoff := time.Second
	for {
		err := p.setup(ctx)
		if err == nil {
			break
		}
		p.setWaiting(err)
		appendLog(log, "pod not started: %v", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
	p.setWaiting(nil)
	spec := p.plan.template.Spec
	for _, ctr := range spec.InitContainers {
		for {
			err := p.runInit(ctx, ctr)
			if err == nil {
				break
			}
			appendLog(log, "init container %s: %v", ctr.Name, err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
		}
	}
	for _, ctr := range spec.Containers {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.supervise(ctx, ctr)
		}()
		if probe := ctr.ReadinessProbe; probe != nil {
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.probe(ctx, ctr, probe)
			}()
		}
		if probe := ctr.LivenessProbe; probe != nil {
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.liveness(ctx, ctr, probe)
			}()
		}
	}
}

// setup creates the pod's network and Pod object, materialises its volumes and mints
// its service account token.
func (p *labPod) setup(ctx context.Context) error {
	c, n := p.k.c, p.plan.node
	if p.pod == nil {
		pod, err := n.addPodNetns(ctx, p.plan.template.Spec.HostNetwork)
		if err != nil {
			return err
		}
		pod.Name, pod.Namespace = p.plan.name, WorkloadNamespace
		p.mu.Lock()
		p.pod = pod
		p.mu.Unlock()
	}
	if p.uid == "" {
		if err := c.deletePodObject(ctx, p.plan.name); err != nil {
			return fmt.Errorf("replace pod object: %w", err)
		}
		obj := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Name: p.plan.name, Namespace: WorkloadNamespace,
				Labels: p.plan.template.Labels, Annotations: p.plan.template.Annotations,
				OwnerReferences: []metav1.OwnerReference{p.plan.owner},
			},
			Spec: *p.plan.template.Spec.DeepCopy(),
		}
		obj.Spec.NodeName = n.Name
		created, err := c.Client.CoreV1().Pods(WorkloadNamespace).Create(ctx, obj, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create pod object: %w", err)
		}
		p.mu.Lock()
		p.uid = string(created.UID)
		p.pod.uid = p.uid
		p.mu.Unlock()
	}
	if err := p.materialiseVolumes(); err != nil {
		return err
	}
	return p.writeCredentials(ctx)
}

func (p *labPod) setWaiting(err error) {
	p.mu.Lock()
	p.waiting = err
	p.mu.Unlock()
	p.updateStatus()
}

// materialiseVolumes gives every volume a directory: Secret and ConfigMap volumes are
// written from their objects (the pod waits for them, as a kubelet would), hostPath
// volumes map to the node's directory under the lab, emptyDir to a per-pod one. System
// paths (/lib/modules, /sys, /proc, /dev) are passed through read from the host.
func (p *labPod) materialiseVolumes() error {
	k := p.k
	vols := map[string]string{}
	var errs []error
	for _, v := range p.plan.template.Spec.Volumes {
		switch {
		case v.Secret != nil:
			s, err := k.secrets.Secrets(WorkloadNamespace).Get(v.Secret.SecretName)
			if err != nil {
				if v.Secret.Optional != nil && *v.Secret.Optional {
					s = &corev1.Secret{}
				} else {
					errs = append(errs, fmt.Errorf("volume %s: secret %s/%s: %w", v.Name, WorkloadNamespace, v.Secret.SecretName, err))
					continue
				}
			}
			dir := filepath.Join(p.dir, "volumes", v.Name)
			if err := writeKeys(dir, s.Data, v.Secret.Items); err != nil {
				errs = append(errs, err)
			}
			vols[v.Name] = dir
		case v.ConfigMap != nil:
			cm, err := k.cms.ConfigMaps(WorkloadNamespace).Get(v.ConfigMap.Name)
			if err != nil {
				if v.ConfigMap.Optional != nil && *v.ConfigMap.Optional {
					cm = &corev1.ConfigMap{}
				} else {
					errs = append(errs, fmt.Errorf("volume %s: configmap %s/%s: %w", v.Name, WorkloadNamespace, v.ConfigMap.Name, err))
					continue
				}
			}
			data := map[string][]byte{}
			for key, val := range cm.Data {
				data[key] = []byte(val)
			}
			maps.Copy(data, cm.BinaryData)
			dir := filepath.Join(p.dir, "volumes", v.Name)
			if err := writeKeys(dir, data, v.ConfigMap.Items); err != nil {
				errs = append(errs, err)
			}
			vols[v.Name] = dir
		case v.HostPath != nil:
			if passThrough(v.HostPath.Path) {
				vols[v.Name] = v.HostPath.Path
				continue
			}
			dir := filepath.Join(p.plan.node.Dir(), "hostpath", filepath.Clean(v.HostPath.Path))
			if v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathFileOrCreate {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					errs = append(errs, err)
				}
			}
			vols[v.Name] = dir
		case v.EmptyDir != nil:
			dir := filepath.Join(p.dir, "volumes", v.Name)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				errs = append(errs, err)
			}
			vols[v.Name] = dir
		default:
			// Projected service account tokens and the like: the pod gets its token
			// through KUBECONFIG and the service account directory instead.
		}
	}
	p.mu.Lock()
	p.volumes = vols
	p.mu.Unlock()
	return errors.Join(errs...)
}

// refreshVolumes rewrites Secret and ConfigMap volumes after their objects change, as
// a kubelet eventually does, without restarting the containers.
func (p *labPod) refreshVolumes() {
	p.mu.Lock()
	ready := p.volumes != nil
	p.mu.Unlock()
	if ready {
		_ = p.materialiseVolumes()
	}
}

func passThrough(path string) bool {
	path = filepath.Clean(path)
	for _, sys := range []string{"/lib/modules", "/sys", "/proc", "/dev", "/run/xtables.lock"} {
		if path == sys || strings.HasPrefix(path, sys+"/") {
			return true
		}
	}
	return false
}

// writeKeys writes each key of data to a file in dir, or only items when given.
func writeKeys(dir string, data map[string][]byte, items []corev1.KeyToPath) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	files := map[string][]byte{}
	if len(items) == 0 {
		maps.Copy(files, data)
	}
	for _, it := range items {
		files[it.Path] = data[it.Key]
	}
	for name, b := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		// Write and rename so a reader never sees half a file.
		if err := os.WriteFile(path+".tmp", b, 0o600); err != nil {
			return err
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			return err
		}
	}
	return nil
}

// writeCredentials mints a token for the pod's service account, bound to the Pod
// object so it dies with it, and writes it the way a pod sees it (the service account
// directory) plus a kubeconfig using it against the API server's in-lab address.
func (p *labPod) writeCredentials(ctx context.Context) error {
	c := p.k.c
	sa := p.plan.template.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tr, err := c.Client.CoreV1().ServiceAccounts(WorkloadNamespace).CreateToken(ctx, sa, &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{
			ExpirationSeconds: new(int64(24 * 3600)),
			BoundObjectRef:    &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.plan.name, UID: p.podUID()},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("token for service account %s/%s: %w", WorkloadNamespace, sa, err)
	}
	saDir := filepath.Join(p.dir, "serviceaccount")
	if err := writeKeys(saDir, map[string][]byte{
		"token": []byte(tr.Status.Token), "ca.crt": c.pki.CACert, "namespace": []byte(WorkloadNamespace),
	}, nil); err != nil {
		return err
	}
	kc, err := kubeconfig(c.Name, "https://"+c.APIServer.String(), c.pki.CACert, func(a *clientcmdapi.AuthInfo) {
		// tokenFile, not token: client-go rereads it, so a refreshed token is picked up.
		a.TokenFile = filepath.Join(saDir, "token")
	})
	if err != nil {
		return err
	}
	return writeKeys(p.dir, map[string][]byte{"kubeconfig": kc}, nil)
}

func (p *labPod) podUID() types.UID {
	p.mu.Lock()
	defer p.mu.Unlock()
	return types.UID(p.uid)
}

// saMountPath is where pods find their service account credentials.
const saMountPath = "/var/run/secrets/kubernetes.io/serviceaccount"

// command builds what to exec for a container: its program from the repository's
// bin/, arguments and environment resolved as a kubelet would, every path under a
// volume's mountPath rewritten to the volume's directory, and a shell prologue that
// also bind-mounts the volumes at their mountPaths inside the process's own mount
// namespace (`ip netns exec` gives each process one, a slave of the host's, so nothing
// propagates back). Programs that open fixed paths, like wireguard-go's socket
// directory, thereby see their node's directory. The mount points themselves are
// created as empty directories on the host's filesystem and left there: removing one
// would detach the mounts of another lab running at the same time.
func (p *labPod) command(ctr corev1.Container) (argv, env []string, err error) {
	c := p.k.c
	bin, err := c.lab.binary(ctr)
	if err != nil {
		return nil, nil, err
	}
	p.mu.Lock()
	vols := maps.Clone(p.volumes)
	p.mu.Unlock()

	type mount struct{ src, dst string }
	var mounts []mount
	for _, vm := range ctr.VolumeMounts {
		src, ok := vols[vm.Name]
		if !ok {
			continue
		}
		if vm.SubPath != "" {
			src = filepath.Join(src, vm.SubPath)
		}
		mounts = append(mounts, mount{src, filepath.Clean(vm.MountPath)})
	}
	mounts = append(mounts, mount{filepath.Join(p.dir, "serviceaccount"), saMountPath})
	// Longest mountPath first, so /a/b wins over /a when rewriting.
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i].dst) > len(mounts[j].dst) })
	rewrite := func(s string) string {
		for _, m := range mounts {
			if s == m.dst || strings.HasPrefix(s, m.dst+"/") {
				return m.src + s[len(m.dst):]
			}
		}
		return s
	}
	rewriteArg := func(s string) string {
		if flag, val, ok := strings.Cut(s, "="); ok && strings.HasPrefix(flag, "-") {
			return flag + "=" + rewrite(val)
		}
		return rewrite(s)
	}

	vars, err := p.env(ctr)
	if err != nil {
		return nil, nil, err
	}
	expand := func(s string) string { return expandVars(s, vars) }
	args := slices.Clone(ctr.Command)
	if len(args) > 0 {
		args = args[1:]
	}
	args = append(args, ctr.Args...)
	for i := range args {
		args[i] = rewriteArg(expand(args[i]))
	}
	svcPort := "443"
	env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOSTNAME=" + p.plan.name,
		"KUBECONFIG=" + filepath.Join(p.dir, "kubeconfig"),
		"KUBERNETES_SERVICE_HOST=" + firstServiceIP(c.ServiceCIDR).String(),
		"KUBERNETES_SERVICE_PORT=" + svcPort,
	}
	for _, kv := range vars.list {
		env = append(env, kv.name+"="+rewrite(kv.value))
	}

	var script strings.Builder
	script.WriteString("set -e\n")
	for i := len(mounts) - 1; i >= 0; i-- { // shortest first: parents before children
		m := mounts[i]
		if m.src == m.dst {
			continue
		}
		fi, err := os.Stat(m.src)
		if err != nil {
			return nil, nil, fmt.Errorf("volume for %s: %w", m.dst, err)
		}
		if fi.IsDir() {
			fmt.Fprintf(&script, "mkdir -p %s\n", shellQuote(m.dst))
		} else {
			fmt.Fprintf(&script, "mkdir -p %s; [ -e %s ] || : > %s\n", shellQuote(filepath.Dir(m.dst)), shellQuote(m.dst), shellQuote(m.dst))
		}
		fmt.Fprintf(&script, "mount --bind %s %s\n", shellQuote(m.src), shellQuote(m.dst))
	}
	script.WriteString(`exec "$@"` + "\n")
	argv = append([]string{"sh", "-c", script.String(), "sh", bin}, args...)
	return argv, env, nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

type envVar struct{ name, value string }

type envList struct {
	list []envVar
	m    map[string]string
}

func (e *envList) set(name, value string) {
	if _, ok := e.m[name]; ok {
		for i := range e.list {
			if e.list[i].name == name {
				e.list[i].value = value
			}
		}
	} else {
		e.list = append(e.list, envVar{name, value})
	}
	e.m[name] = value
}

// env resolves a container's environment: envFrom, then env with $(VAR) references and
// valueFrom (fieldRef, secretKeyRef, configMapKeyRef).
func (p *labPod) env(ctr corev1.Container) (*envList, error) {
	k := p.k
	e := &envList{m: map[string]string{}}
	for _, from := range ctr.EnvFrom {
		var data map[string]string
		switch {
		case from.SecretRef != nil:
			s, err := k.secrets.Secrets(WorkloadNamespace).Get(from.SecretRef.Name)
			if err != nil {
				if from.SecretRef.Optional != nil && *from.SecretRef.Optional {
					continue
				}
				return nil, fmt.Errorf("envFrom secret %s: %w", from.SecretRef.Name, err)
			}
			data = map[string]string{}
			for key, v := range s.Data {
				data[key] = string(v)
			}
		case from.ConfigMapRef != nil:
			cm, err := k.cms.ConfigMaps(WorkloadNamespace).Get(from.ConfigMapRef.Name)
			if err != nil {
				if from.ConfigMapRef.Optional != nil && *from.ConfigMapRef.Optional {
					continue
				}
				return nil, fmt.Errorf("envFrom configmap %s: %w", from.ConfigMapRef.Name, err)
			}
			data = cm.Data
		}
		keys := slices.Sorted(maps.Keys(data))
		for _, key := range keys {
			e.set(from.Prefix+key, data[key])
		}
	}
	for _, v := range ctr.Env {
		if v.ValueFrom == nil {
			e.set(v.Name, expandVars(v.Value, e))
			continue
		}
		val, err := p.valueFrom(v.ValueFrom)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", v.Name, err)
		}
		e.set(v.Name, val)
	}
	return e, nil
}

func (p *labPod) valueFrom(src *corev1.EnvVarSource) (string, error) {
	k, pod := p.k, p.pod
	switch {
	case src.FieldRef != nil:
		path := src.FieldRef.FieldPath
		switch path {
		case "metadata.name":
			return p.plan.name, nil
		case "metadata.namespace":
			return WorkloadNamespace, nil
		case "metadata.uid":
			return string(p.podUID()), nil
		case "spec.nodeName":
			return p.plan.node.Name, nil
		case "spec.serviceAccountName":
			return p.plan.template.Spec.ServiceAccountName, nil
		case "status.podIP", "status.podIPs":
			return pod.IP.String(), nil
		case "status.hostIP", "status.hostIPs":
			return p.plan.node.IP.String(), nil
		}
		for prefix, m := range map[string]map[string]string{"metadata.labels": p.plan.template.Labels, "metadata.annotations": p.plan.template.Annotations} {
			if key, ok := strings.CutPrefix(path, prefix+"['"); ok {
				return m[strings.TrimSuffix(key, "']")], nil
			}
		}
		return "", fmt.Errorf("fieldRef %s is not supported by the lab", path)
	case src.SecretKeyRef != nil:
		s, err := k.secrets.Secrets(WorkloadNamespace).Get(src.SecretKeyRef.Name)
		if err != nil {
			if src.SecretKeyRef.Optional != nil && *src.SecretKeyRef.Optional {
				return "", nil
			}
			return "", err
		}
		return string(s.Data[src.SecretKeyRef.Key]), nil
	case src.ConfigMapKeyRef != nil:
		cm, err := k.cms.ConfigMaps(WorkloadNamespace).Get(src.ConfigMapKeyRef.Name)
		if err != nil {
			if src.ConfigMapKeyRef.Optional != nil && *src.ConfigMapKeyRef.Optional {
				return "", nil
			}
			return "", err
		}
		return cm.Data[src.ConfigMapKeyRef.Key], nil
	case src.ResourceFieldRef != nil:
		return "0", nil
	}
	return "", errors.New("empty valueFrom")
}

// expandVars replaces $(NAME) with defined variables and $$ with $, as Kubernetes
// does in command, args and env values.
func expandVars(s string, e *envList) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			if end := strings.IndexByte(s[i+2:], ')'); end >= 0 {
				name := s[i+2 : i+2+end]
				if v, ok := e.m[name]; ok {
					b.WriteString(v)
					i += 2 + end
					continue
				}
			}
			b.WriteByte('$')
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// binary maps a container to a program: the base name of command[0] (or of the image
// name without tag) under RepoRoot/bin, unless Options.Binaries says otherwise.
func (l *Lab) binary(ctr corev1.Container) (string, error) {
	name := ""
	if len(ctr.Command) > 0 {
		name = filepath.Base(ctr.Command[0])
	} else {
		img := ctr.Image
		if i := strings.IndexAny(img, "@"); i >= 0 {
			img = img[:i]
		}
		if i := strings.LastIndexByte(img, ':'); i > strings.LastIndexByte(img, '/') {
			img = img[:i]
		}
		name = filepath.Base(img)
	}
	path := filepath.Join(l.root, "bin", name)
	if p, ok := l.opts.Binaries[name]; ok {
		path = p
	}
	if err := executable(path); err != nil {
		return "", fmt.Errorf("%w for container %s: %w (run `make build`)", ErrMissingBinary, ctr.Name, err)
	}
	return path, nil
}

// runInit runs an init container to completion.
func (p *labPod) runInit(ctx context.Context, ctr corev1.Container) error {
	argv, env, err := p.command(ctr)
	if err != nil {
		return err
	}
	pr, err := startProc(p.k.c.Name+"/"+p.plan.name+"/"+ctr.Name, p.pod.Netns, p.k.c.logPath(p.plan.name+"-"+ctr.Name, p.plan.node.Name), env, argv...)
	if err != nil {
		return err
	}
	select {
	case <-pr.done:
	case <-ctx.Done():
		return pr.stop(context.Background(), time.Second)
	}
	if pr.err != nil {
		return pr.exitError()
	}
	return nil
}

// supervise runs one container and restarts it when it exits, with a backoff that
// starts at zero so a simulated crash recovers quickly, doubles to 30 s, and resets
// after a minute of running.
func (p *labPod) supervise(ctx context.Context, ctr corev1.Container) {
	c := p.k.c
	st := p.containers[ctr.Name]
	log := c.logPath(p.plan.name, p.plan.node.Name)
	if len(p.plan.template.Spec.Containers) > 1 {
		log = c.logPath(p.plan.name+"-"+ctr.Name, p.plan.node.Name)
	}
	grace := 5 * time.Second
	if g := p.plan.template.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = min(grace, time.Duration(*g)*time.Second)
	}
	var backoff time.Duration
	for {
		// A powered-off node runs nothing; wait until it is back.
		for p.plan.node.isDown() {
			select {
			case <-ctx.Done():
				return
			case <-p.k.nodeChange():
			}
		}
		argv, env, err := p.command(ctr)
		var pr *proc
		if err == nil {
			pr, err = startProc(c.Name+"/"+p.plan.name+"/"+ctr.Name, p.pod.Netns, log, env, argv...)
		}
		if err != nil {
			appendLog(log, "container %s not started: %v", ctr.Name, err)
			p.mu.Lock()
			st.waiting = "CreateContainerError"
			p.waiting = err
			p.mu.Unlock()
			p.updateStatus()
		} else {
			p.mu.Lock()
			st.proc, st.waiting, p.waiting = pr, "", nil
			st.ready = ctr.ReadinessProbe == nil
			p.mu.Unlock()
			p.updateStatus()
			started := time.Now()
			select {
			case <-ctx.Done():
				_ = pr.stop(context.Background(), grace)
				return
			case sig := <-st.kill:
				pr.signal(sig)
				<-pr.done
				if sig == syscall.SIGTERM {
					backoff = 0 // a requested restart, not a crash
				}
			case <-pr.done:
			}
			appendLog(log, "container %s exited: %v", ctr.Name, pr.err)
			if time.Since(started) > time.Minute {
				backoff = 0
			}
			p.mu.Lock()
			st.proc, st.ready, st.waiting = nil, false, "CrashLoopBackOff"
			st.restarts++
			p.mu.Unlock()
			p.updateStatus()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(max(2*backoff, time.Second), 30*time.Second)
	}
}

// probe runs a readiness probe once a second (faster than a kubelet's default, so
// tests do not wait) and flips the container's readiness after failureThreshold
// failures or one success.
func (p *labPod) probe(ctx context.Context, ctr corev1.Container, pr *corev1.Probe) {
	st := p.containers[ctr.Name]
	threshold := max(int(pr.FailureThreshold), 3)
	failures := 0
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		p.mu.Lock()
		running := st.proc != nil
		p.mu.Unlock()
		if !running {
			continue
		}
		err := p.check(ctx, ctr, pr)
		p.mu.Lock()
		was := st.ready
		if err == nil {
			failures, st.ready = 0, true
		} else if failures++; failures >= threshold {
			st.ready = false
		}
		changed := was != st.ready
		p.mu.Unlock()
		if changed {
			p.updateStatus()
		}
	}
}

// liveness runs a liveness probe at the spec's period (default 10 s: killing a slow
// starter would be worse than noticing a hang late) after its initial delay, counted
// from each container start, and kills the container after failureThreshold failures
// in a row, as a kubelet does.
func (p *labPod) liveness(ctx context.Context, ctr corev1.Container, pr *corev1.Probe) {
	st := p.containers[ctr.Name]
	period := time.Duration(max(pr.PeriodSeconds, 1)) * time.Second
	if pr.PeriodSeconds == 0 {
		period = 10 * time.Second
	}
	threshold := int(pr.FailureThreshold)
	if threshold == 0 {
		threshold = 3
	}
	var current *proc
	var started time.Time
	failures := 0
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		p.mu.Lock()
		pr2 := st.proc
		p.mu.Unlock()
		if pr2 == nil {
			continue
		}
		if pr2 != current {
			current, started, failures = pr2, time.Now(), 0
		}
		if time.Since(started) < time.Duration(pr.InitialDelaySeconds)*time.Second {
			continue
		}
		if err := p.check(ctx, ctr, pr); err == nil {
			failures = 0
			continue
		}
		if failures++; failures >= threshold {
			appendLog(p.k.c.logPath(p.plan.name, p.plan.node.Name), "container %s failed its liveness probe %d times; killing it", ctr.Name, failures)
			select {
			case st.kill <- syscall.SIGKILL:
			default:
			}
			failures = 0
		}
	}
}

func (p *labPod) check(ctx context.Context, ctr corev1.Container, pr *corev1.Probe) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(max(pr.TimeoutSeconds, 1))*time.Second)
	defer cancel()
	port := func(ps string, pi int32) string {
		if ps == "" {
			return strconv.Itoa(int(pi))
		}
		for _, cp := range ctr.Ports {
			if cp.Name == ps {
				return strconv.Itoa(int(cp.ContainerPort))
			}
		}
		return ps
	}
	host := p.pod.IP.String()
	// Probes come from the node, like a kubelet's.
	netns := p.plan.node.Netns
	switch {
	case pr.HTTPGet != nil:
		h := pr.HTTPGet
		if h.Host != "" {
			host = h.Host
		}
		scheme := "http"
		if h.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		client := &http.Client{Transport: &http.Transport{
			DialContext:       func(ctx context.Context, n, a string) (net.Conn, error) { return dialIn(ctx, netns, n, a) },
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // kubelets do not verify probe certificates either
			DisableKeepAlives: true,
		}}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+net.JoinHostPort(host, port(h.Port.StrVal, h.Port.IntVal))+h.Path, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("probe: %s", resp.Status)
		}
		return nil
	case pr.TCPSocket != nil:
		conn, err := dialIn(ctx, netns, "tcp", net.JoinHostPort(host, port(pr.TCPSocket.Port.StrVal, pr.TCPSocket.Port.IntVal)))
		if err != nil {
			return err
		}
		return conn.Close()
	case pr.Exec != nil:
		_, err := output(ctx, "ip", append([]string{"netns", "exec", p.pod.Netns}, pr.Exec.Command...)...)
		return err
	}
	return nil
}

// updateStatus writes the Pod's status from the containers' state.
func (p *labPod) updateStatus() {
	p.mu.Lock()
	if p.uid == "" || p.pod == nil {
		p.mu.Unlock()
		return
	}
	ready := p.waiting == nil
	var statuses []corev1.ContainerStatus
	for _, ctr := range p.plan.template.Spec.Containers {
		st := p.containers[ctr.Name]
		cs := corev1.ContainerStatus{Name: ctr.Name, Image: ctr.Image, ImageID: "lab://" + ctr.Image, RestartCount: st.restarts, Ready: st.proc != nil && st.ready}
		if st.proc != nil {
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.Now()}
			cs.Started = new(true)
		} else {
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: st.waiting}
			if p.waiting != nil {
				cs.State.Waiting.Message = p.waiting.Error()
			}
		}
		ready = ready && cs.Ready
		statuses = append(statuses, cs)
	}
	status := p.pod.status(ready)
	status.ContainerStatuses = statuses
	name := p.plan.name
	p.mu.Unlock()

	pods := p.k.c.Client.CoreV1().Pods(WorkloadNamespace)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 5 {
		obj, err := pods.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return
		}
		status.StartTime = obj.Status.StartTime
		if status.StartTime == nil {
			status.StartTime = new(metav1.Now())
		}
		obj.Status = status
		if _, err = pods.UpdateStatus(ctx, obj, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
			// Workload status counts ready pods.
			p.k.kick()
			return
		}
	}
}

// stop ends the pod's containers and removes its Pod object and namespace.
func (p *labPod) stop(ctx context.Context) {
	p.cancel()
	p.wg.Wait()
	c := p.k.c
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	_ = c.Client.CoreV1().Pods(WorkloadNamespace).Delete(dctx, p.plan.name, metav1.DeleteOptions{GracePeriodSeconds: new(int64(0))})
	p.mu.Lock()
	pod := p.pod
	p.mu.Unlock()
	if pod != nil && !pod.HostNetwork {
		_ = removeNetns(dctx, []string{pod.Netns})
	}
	_ = os.RemoveAll(p.dir)
}

func appendLog(path, format string, args ...any) {
	_ = os.MkdirAll(filepath.Dir(path), 0o755)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "=== %s lab: %s\n", time.Now().Format(time.RFC3339Nano), fmt.Sprintf(format, args...))
}
