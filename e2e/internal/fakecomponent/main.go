// Command fakecomponent stands in for an mcnet binary in the lab's own tests: it
// reports what the kubelet-lite gave it (arguments, environment, mounted files, what
// its credentials may do) as JSON, serves /readyz, and runs until SIGTERM.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Report is what the component writes to --report.
type Report struct {
	Args []string          `json:"args"`
	Env  map[string]string `json:"env"`
	// Files read through the paths the pod spec names (bind mounts).
	Files map[string]string `json:"files"`
	// CanListNodes and CanListSecrets say what the service account token allows.
	CanListNodes, CanListSecrets bool
	Errors                       []string `json:"errors"`
}

// boundPath is where the lab's own test mounts a secret volume.
const boundPath = "/etc/fake/creds/token"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run() error {
	report := flag.String("report", "", "where to write the report")
	read := flag.String("read", "", "a file to read through its in-pod path")
	touch := flag.String("touch", "", "a file to create through its in-pod path")
	listen := flag.String("listen", "", "address to serve /readyz and / on")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	r := Report{Args: os.Args[1:], Env: map[string]string{}, Files: map[string]string{}}
	for _, k := range []string{"NODE_NAME", "POD_NAME", "POD_NAMESPACE", "POD_IP", "HOST_IP", "KUBECONFIG", "FROM_SECRET", "EXPANDED", "STATE"} {
		r.Env[k] = os.Getenv(k)
	}
	if *read != "" {
		b, err := os.ReadFile(*read)
		r.Files[*read] = string(b)
		if err != nil {
			r.Errors = append(r.Errors, err.Error())
		}
	}
	// A fixed path, as programs like wireguard-go use: only the bind mount of the
	// volume at its mountPath makes it resolve.
	if b, err := os.ReadFile(boundPath); err == nil {
		r.Files["bound:"+boundPath] = string(b)
	} else {
		r.Errors = append(r.Errors, err.Error())
	}
	if *touch != "" {
		if err := os.WriteFile(*touch, []byte(os.Getenv("NODE_NAME")), 0o644); err != nil {
			r.Errors = append(r.Errors, err.Error())
		}
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	_, err = cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	r.CanListNodes = err == nil
	if err != nil {
		r.Errors = append(r.Errors, err.Error())
	}
	_, err = cs.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
	r.CanListSecrets = err == nil

	if *report != "" {
		b, _ := json.MarshalIndent(r, "", "  ")
		if err := os.MkdirAll(filepath.Dir(*report), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(*report+".tmp", b, 0o644); err != nil {
			return err
		}
		if err := os.Rename(*report+".tmp", *report); err != nil {
			return err
		}
	}
	if *listen != "" {
		srv := &http.Server{Addr: *listen, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			fmt.Fprintf(w, "%s %s\n", os.Getenv("POD_NAME"), req.RemoteAddr)
		})}
		go func() { <-ctx.Done(); _ = srv.Close() }()
		fmt.Println("serving on", *listen)
		if err := srv.ListenAndServe(); err != http.ErrServerClosed {
			return err
		}
		return nil
	}
	<-ctx.Done()
	return nil
}
