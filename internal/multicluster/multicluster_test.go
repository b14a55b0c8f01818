package multicluster

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/spf13/pflag"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Every kubeconfig flag the root shows must reach each context of a multi-cluster verb
// exactly as cli-runtime applies it to kubectl's one context. The test sets every flag
// ConfigFlags registers (a flag added to cli-runtime later fails the test until it has
// a value here) and compares the rest.Config of ForContext with cli-runtime's own.
func TestForContextHonoursEveryKubeconfigFlag(t *testing.T) {
	dir := t.TempDir()
	kc := clientcmdapi.NewConfig()
	for _, n := range []string{"east", "west"} {
		kc.Clusters[n] = &clientcmdapi.Cluster{Server: "https://" + n + ".example:6443"}
		kc.AuthInfos[n] = &clientcmdapi.AuthInfo{Token: n + "-token"}
		kc.Contexts[n] = &clientcmdapi.Context{Cluster: n, AuthInfo: n, Namespace: n + "-ns"}
	}
	kc.AuthInfos["viewer"] = &clientcmdapi.AuthInfo{Token: "viewer-token"}
	kc.CurrentContext = "east"
	path := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ca.crt", "tls.crt", "tls.key"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	values := map[string]string{
		"kubeconfig":               path,
		"cache-dir":                filepath.Join(dir, "cache"),
		"certificate-authority":    filepath.Join(dir, "ca.crt"),
		"client-certificate":       filepath.Join(dir, "tls.crt"),
		"client-key":               filepath.Join(dir, "tls.key"),
		"token":                    "flag-token",
		"as":                       "alice",
		"as-uid":                   "uid-1",
		"as-group":                 "devs",
		"as-user-extra":            "team=net",
		"proxy-url":                "http://proxy.example:3128",
		"username":                 "bob",
		"password":                 "secret",
		"cluster":                  "west",
		"user":                     "viewer",
		"namespace":                "app",
		"context":                  "ignored-for-multicluster",
		"server":                   "https://override.example:6443",
		"tls-server-name":          "api.example",
		"insecure-skip-tls-verify": "false",
		"request-timeout":          "7s",
		"disable-compression":      "true",
	}
	flags := genericclioptions.NewConfigFlags(true)
	fs := pflag.NewFlagSet("root", pflag.ContinueOnError)
	flags.AddFlags(fs)
	fs.VisitAll(func(f *pflag.Flag) {
		v, ok := values[f.Name]
		if !ok {
			t.Errorf("kubeconfig flag --%s has no value in this test: does ForContext honour it?", f.Name)
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			t.Fatalf("--%s=%s: %v", f.Name, v, err)
		}
	})
	for _, ctx := range []string{"east", "west"} {
		want := genericclioptions.NewConfigFlags(false)
		wfs := pflag.NewFlagSet("want", pflag.ContinueOnError)
		want.AddFlags(wfs)
		fs.VisitAll(func(f *pflag.Flag) { _ = wfs.Set(f.Name, f.Value.String()) })
		_ = wfs.Set("context", ctx)
		// pflag's String of a slice is "[devs]"; set the slices again plainly.
		*want.ImpersonateGroup = []string{"devs"}
		*want.ImpersonateUserExtra = []string{"team=net"}
		wantCfg, err := want.ToRESTConfig()
		if err != nil {
			t.Fatal(err)
		}
		got, err := ForContext(flags, ctx).ToRESTConfig()
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(wantCfg, got, cmpopts.IgnoreFields(rest.Config{}, "WrapTransport", "Dial", "Proxy"), cmpopts.IgnoreUnexported(rest.Config{})); diff != "" {
			t.Errorf("context %s (-cli-runtime +ForContext):\n%s", ctx, diff)
		}
		if got.Host != values["server"] || got.BearerToken != values["token"] || got.Impersonate.UserName != "alice" || got.Timeout.String() != "7s" || !got.DisableCompression || got.Proxy == nil || len(got.Impersonate.Extra["team"]) != 1 {
			t.Errorf("context %s: flags not applied: host %s token %s as %s timeout %s compression off %v", ctx, got.Host, got.BearerToken, got.Impersonate.UserName, got.Timeout, got.DisableCompression)
		}
		ns, _, err := ForContext(flags, ctx).ToRawKubeConfigLoader().Namespace()
		if err != nil || ns != "app" {
			t.Errorf("context %s: namespace %q, %v; want -n app", ctx, ns, err)
		}
	}
	if *flags.Context != "ignored-for-multicluster" {
		t.Errorf("ForContext changed the root's flags: --context is %q", *flags.Context)
	}
}
