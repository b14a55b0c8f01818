package dns

import (
	"context"
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// TestNoteHealth checks the DNS server's log names the clusters it answers with at the
// first health read, and then exactly the clusters that leave and come back.
func TestNoteHealth(t *testing.T) {
	var lines []string
	logger := funcr.New(func(_, args string) { lines = append(lines, strings.TrimPrefix(args, `"level"=0 `)) }, funcr.Options{})
	ctx := log.IntoContext(context.Background(), logger)
	s := &Source{Index: NewIndex()}
	reads := []struct {
		health map[string]Health
		want   []string
	}{
		{map[string]Health{"east": {Connected: true}, "west": {Connected: true}, "south": {}},
			[]string{`"msg"="Remote clusters in DNS answers" "clusters"=["east" "west"]`}},
		{map[string]Health{"east": {Connected: true}, "west": {Connected: true}}, nil},
		{map[string]Health{"east": {Connected: true}},
			[]string{`"msg"="Cluster left DNS answers: the local active gateway reports no connection to it" "cluster"="west"`}},
		{map[string]Health{"west": {Connected: true}, "south": {Connected: true}},
			[]string{
				`"msg"="Cluster left DNS answers: the local active gateway reports no connection to it" "cluster"="east"`,
				`"msg"="Cluster back in DNS answers" "cluster"="south"`,
				`"msg"="Cluster back in DNS answers" "cluster"="west"`,
			}},
		{map[string]Health{}, []string{
			`"msg"="Cluster left DNS answers: the local active gateway reports no connection to it" "cluster"="south"`,
			`"msg"="Cluster left DNS answers: the local active gateway reports no connection to it" "cluster"="west"`,
		}},
	}
	for i, r := range reads {
		lines = nil
		s.noteHealth(ctx, s.Index.SetHealth(r.health), r.health)
		if diff := cmp.Diff(r.want, lines); diff != "" {
			t.Errorf("read %d: log lines (-want +got):\n%s", i, diff)
		}
	}
}

// TestNoteHealthFirstReadEmpty checks a first read with no remote connected still says
// so, once.
func TestNoteHealthFirstReadEmpty(t *testing.T) {
	var lines []string
	ctx := log.IntoContext(context.Background(), funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{}))
	s := &Source{Index: NewIndex()}
	for _, h := range []map[string]Health{nil, {}} {
		s.noteHealth(ctx, s.Index.SetHealth(h), h)
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "Remote clusters in DNS answers") {
		t.Errorf("log lines %q, want one saying which clusters DNS answers with", lines)
	}
}
