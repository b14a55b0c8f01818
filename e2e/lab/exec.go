package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/util/exec"
)

// Exec runs cmd in a container of a pod through the API server and the pod's kubelet
// (the pods/exec subresource, WebSocket with a SPDY fallback, as kubectl does) and
// returns stdout and stderr combined. A non-zero exit is an error that carries the
// output.
func (c *Cluster) Exec(ctx context.Context, namespace, pod, container string, cmd ...string) (string, error) {
	req := c.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace(namespace).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: container, Command: cmd, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	spdy, err := remotecommand.NewSPDYExecutor(c.Config, "POST", req.URL())
	if err != nil {
		return "", err
	}
	ws, err := remotecommand.NewWebSocketExecutor(c.Config, "GET", req.URL().String())
	if err != nil {
		return "", err
	}
	e, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool { return true })
	if err != nil {
		return "", err
	}
	var out lockedBuffer
	err = e.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &out})
	s := out.String()
	if err != nil {
		var ee exec.ExitError
		if errors.As(err, &ee) {
			return s, fmt.Errorf("%s: exit status %d: %s", strings.Join(cmd, " "), ee.ExitStatus(), strings.TrimSpace(s))
		}
		return s, fmt.Errorf("exec %s in %s/%s: %w", strings.Join(cmd, " "), namespace, pod, err)
	}
	return s, nil
}

// lockedBuffer is written by the stdout and stderr streams at once.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
