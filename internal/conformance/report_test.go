package conformance

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func readTestReport(t *testing.T) []Spec {
	t.Helper()
	f, err := os.Open("testdata/report.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	specs, err := ReadReport(f)
	if err != nil {
		t.Fatal(err)
	}
	return specs
}

func TestReadReport(t *testing.T) {
	want := []Spec{
		{
			Name:    "A ClusterIP service exported on two clusters with conflicting ports should apply the conflict resolution policy and report a Conflict condition on each ServiceExport",
			Label:   Required,
			Labels:  []string{"ClusterIP"},
			Outcome: Pass,
		},
		{
			Name:    "An IP should be allocated for a ClusterSetIP ServiceImport for each IP family",
			Label:   Required,
			Labels:  []string{"ClusterIP"},
			Outcome: Fail,
			Message: "Timed out after 20.001s.",
		},
		{
			Name:    "A DNS SRV query of the <service>.<ns>.svc.clusterset.local domain for a headless service should return valid SRV records",
			Label:   Optional,
			Labels:  []string{"DNS", "Headless"},
			Outcome: Error, // failed without the suite's non-conformant mark: conformance unknown
			Message: "Test suite set up failed",
		},
		{
			Name:    "Exporting a service should create an MCS EndpointSlice in the service's namespace in each cluster with the required MCS labels. Unexporting should delete the EndpointSlice.",
			Label:   Optional,
			Labels:  []string{"EndpointSlice"},
			Outcome: Skipped,
			Message: "This test requires at least 2 clusters - skipping",
		},
	}
	if diff := cmp.Diff(want, readTestReport(t)); diff != "" {
		t.Errorf("ReadReport (-want +got):\n%s", diff)
	}
}

func TestWriteTable(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteTable(&buf, readTestReport(t)); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "table.golden")
	if *update {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), buf.String()); diff != "" {
		t.Errorf("table (-want +got):\n%s", diff)
	}
	if got := Summary(readTestReport(t)); got != "Required 1/2, Optional 0/2" {
		t.Errorf("Summary = %q", got)
	}
}

func TestMergeKubeconfigs(t *testing.T) {
	dir := t.TempDir()
	write := func(name, server string) string {
		cfg := clientcmdapi.NewConfig()
		cfg.Clusters["lab"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: "ca.crt"}
		cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: "t-" + name}
		cfg.Contexts["lab"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: "admin"}
		cfg.CurrentContext = "lab"
		sub := filepath.Join(dir, name)
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(sub, "kubeconfig")
		if err := clientcmd.WriteToFile(*cfg, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	src := map[string]string{"east": write("east", "https://198.18.1.1:6443"), "west": write("west", "https://198.18.2.1:6443")}
	out := filepath.Join(dir, "merged")
	if err := MergeKubeconfigs(out, src, []string{"west", "east"}); err != nil {
		t.Fatal(err)
	}
	got, err := clientcmd.LoadFromFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if got.CurrentContext != "west" || len(got.Contexts) != 2 {
		t.Fatalf("contexts %v, current %s", got.Contexts, got.CurrentContext)
	}
	for name, server := range map[string]string{"east": "https://198.18.1.1:6443", "west": "https://198.18.2.1:6443"} {
		c := got.Contexts[name]
		if c == nil || c.Cluster != name || got.Clusters[name].Server != server || got.AuthInfos[name].Token != "t-"+name {
			t.Errorf("context %s: %+v", name, c)
		}
		if ca := got.Clusters[name].CertificateAuthority; ca != filepath.Join(dir, name, "ca.crt") {
			t.Errorf("cluster %s CA %q, want it resolved next to its source kubeconfig", name, ca)
		}
	}
	if err := MergeKubeconfigs(out, src, []string{"south"}); err == nil {
		t.Error("merging a cluster without a kubeconfig succeeded")
	}
}

func TestValidate(t *testing.T) {
	o := Options{Suite: filepath.Join(t.TempDir(), "missing"), Kubeconfig: filepath.Join(t.TempDir(), "none"), OutDir: ""}
	err := o.Validate()
	if err == nil {
		t.Fatal("Validate accepted a missing suite, kubeconfig, contexts and output directory")
	}
	for _, want := range []string{"suite binary", "no output directory", "no contexts", "kubeconfig"} {
		if !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("Validate error %q does not mention %q", err, want)
		}
	}
}

// TestRun runs a stand-in for the suite binary that records its arguments and writes a
// report where -ginkgo.json-report says, as Ginkgo does.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	report, err := filepath.Abs("testdata/report.json")
	if err != nil {
		t.Fatal(err)
	}
	suite := filepath.Join(dir, "conformance.test")
	script := "#!/bin/sh\necho \"$@\" > args\nfor a in \"$@\"; do case $a in -ginkgo.json-report=*) cp " + report + " \"${a#*=}\";; esac; done\necho suite ran\nexit 1\n"
	if err := os.WriteFile(suite, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	kc := filepath.Join(dir, "kubeconfig")
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["c"] = &clientcmdapi.Cluster{Server: "https://127.0.0.1:1"}
	cfg.AuthInfos["u"] = &clientcmdapi.AuthInfo{}
	cfg.Contexts["east"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	cfg.Contexts["west"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	if err := clientcmd.WriteToFile(*cfg, kc); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	var progress bytes.Buffer
	specs, err := Run(t.Context(), Options{Suite: suite, Kubeconfig: kc, Contexts: []string{"east", "west"}, OutDir: out, LabelFilter: "Required", Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) != 4 || Summary(specs) != "Required 1/2, Optional 0/2" {
		t.Errorf("specs %v", specs)
	}
	args, err := os.ReadFile(filepath.Join(out, "args")) // the suite runs in the output directory
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"-contexts=east,west", "-kubeconfig=" + kc, "-ginkgo.label-filter=Required", "-ginkgo.junit-report=" + filepath.Join(out, ReportJUnit)} {
		if !bytes.Contains(args, []byte(want)) {
			t.Errorf("suite arguments %q lack %q", args, want)
		}
	}
	if log, _ := os.ReadFile(filepath.Join(out, SuiteLog)); !bytes.Contains(log, []byte("suite ran")) || !bytes.Contains(progress.Bytes(), []byte("suite ran")) {
		t.Errorf("suite output not kept: log %q progress %q", log, progress.String())
	}
	// A suite that dies before writing its report is an error, not an empty result.
	if err := os.WriteFile(suite, []byte("#!/bin/sh\nexit 2\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(t.Context(), Options{Suite: suite, Kubeconfig: kc, Contexts: []string{"east"}, OutDir: out}); err == nil {
		t.Error("Run without a report succeeded")
	}
}
