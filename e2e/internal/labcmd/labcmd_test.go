package labcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/mcnet-io/mcnet/e2e/lab"
)

func TestInterrupted(t *testing.T) {
	failed := errors.New("kube-apiserver exited")
	leftBehind := fmt.Errorf("stop lab abcde: %w: delete namespaces: busy", lab.ErrStop)
	tests := []struct {
		name        string
		interrupted bool
		err         error
		wantErr     error
	}{
		{"clean run", false, nil, nil},
		{"failure nobody interrupted", false, failed, failed},
		{"Ctrl-C, clean teardown", true, context.Canceled, nil},
		{"Ctrl-C cut a step short, clean teardown", true, failed, nil},
		{"Ctrl-C, teardown left something behind", true, errors.Join(context.Canceled, leftBehind), lab.ErrStop},
		{"failure nobody interrupted, teardown left something behind", false, errors.Join(failed, leftBehind), lab.ErrStop},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if tt.interrupted {
				cancel() // what the Ctrl-C handler does to the command's context
			}
			err := interrupted(ctx, io.Discard, tt.err)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("interrupted = %v, want nil (exit 0)", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("interrupted = %v, want an error wrapping %v (exit 1)", err, tt.wantErr)
			}
		})
	}
}
