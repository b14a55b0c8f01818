package clioptions

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"

	"github.com/mcnet-io/mcnet/internal/cmdutil"
	"github.com/mcnet-io/mcnet/internal/output"
)

type report struct {
	output.TypeMeta `json:",inline"`
	Clusters        []string `json:"clusters"`
}

func (r *report) DeepCopyObject() runtime.Object { return output.DeepCopyJSON(r) }
func (r *report) Subjects() []runtime.Object     { return output.ClusterSubjects(r.Clusters...) }

func print(t *testing.T, args ...string) (string, error) {
	t.Helper()
	f := NewPrintFlags(Table)
	cmd := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { return nil }}
	f.AddFlags(cmd)
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	if err := f.Validate(); err != nil {
		return "", err
	}
	if f.Default() {
		return "TABLE", nil
	}
	var b bytes.Buffer
	err := f.Print(&b, &report{TypeMeta: output.Meta("ShowReport"), Clusters: []string{"east", "west", "east"}})
	return b.String(), err
}

func TestPrintFormats(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "TABLE"},
		{[]string{"-o", "table"}, "TABLE"},
		{[]string{"-o", "yaml"}, "apiVersion: mcnet.io/v1alpha1\nclusters:\n- east\n- west\n- east\nkind: ShowReport\n"},
		{[]string{"-o", "json"}, "{\n    \"kind\": \"ShowReport\",\n    \"apiVersion\": \"mcnet.io/v1alpha1\",\n    \"clusters\": [\n        \"east\",\n        \"west\",\n        \"east\"\n    ]\n}\n"},
		{[]string{"-o", "name"}, "cluster.mcnet.io/east\ncluster.mcnet.io/west\n"},
		{[]string{"-o", "jsonpath={.clusters[1]}"}, "west"},
		{[]string{"-o", "go-template={{.kind}} {{len .clusters}}"}, "ShowReport 3"},
		{[]string{"--template", "{{.kind}}"}, "ShowReport"},
	} {
		got, err := print(t, tc.args...)
		if err != nil || got != tc.want {
			t.Errorf("%v: got %q, %v; want %q", tc.args, got, err, tc.want)
		}
	}
}

func TestBadOutputIsUsage(t *testing.T) {
	for _, args := range [][]string{{"-o", "xml"}, {"-o", "jsonpath={.clusters["}, {"-o", "go-template={{.x"}} {
		_, err := print(t, args...)
		var coded *cmdutil.ExitError
		if !errors.As(err, &coded) || coded.Code != cmdutil.ExitUsage || !strings.Contains(err.Error(), "--output") {
			t.Errorf("%v: got %v, want a usage error naming --output", args, err)
		}
	}
}

// A kubeconfig flag given to a verb that cannot use it fails, naming the flag; the
// verb's own flag of the same name (broker credentials' --server) does not count.
func TestRejectKubeconfigFlags(t *testing.T) {
	root := &cobra.Command{Use: "mcnet"}
	genericclioptions.NewConfigFlags(true).AddFlags(root.PersistentFlags())
	sub := &cobra.Command{Use: "sub", RunE: func(*cobra.Command, []string) error { return nil }}
	sub.Flags().String("server", "", "the verb's own")
	root.AddCommand(sub)
	var got error
	sub.RunE = func(cmd *cobra.Command, _ []string) error {
		got = RejectKubeconfigFlags(cmd, "it contacts no cluster", "token")
		return nil
	}
	root.SetArgs([]string{"sub", "--server", "x", "--token", "t", "-n", "app", "--context", "c"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if got == nil || got.Error() != "--context, --namespace do not apply here: it contacts no cluster" {
		t.Errorf("got %v", got)
	}
}
