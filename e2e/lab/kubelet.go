package lab

import "context"

type kubelet struct{}

func (k *kubelet) stop(ctx context.Context) error { return nil }
