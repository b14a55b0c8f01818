package kustomize

import (
	"fmt"
	"path"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/mcnet-io/mcnet/internal/packaging"
)

// TestContainersRunAsTheirUser builds every cluster's overlay and checks each container
// the way a kubelet does before it starts it, against two images: mcnet's own (whose
// config User is packaging.ImageUser) and one with no USER at all (an image built
// another way, or an older release). Whichever image runs:
//   - a container with runAsNonRoot must be admitted, which a kubelet does only when the
//     effective runAsUser is numeric and not 0 (`container has runAsNonRoot and image
//     will run as root` otherwise);
//   - a privileged container (gateway, route agent: they change links, routes and
//     iptables) must run as uid 0, not as the image's unprivileged USER;
//   - every other container must not run as root.
func TestContainersRunAsTheirUser(t *testing.T) {
	tree, err := Render(loadFleet(t), testOptions)
	if err != nil {
		t.Fatal(err)
	}
	fsys := filesys.MakeFsInMemory()
	for p, data := range tree {
		if err := fsys.WriteFile("/repo/"+p, data); err != nil {
			t.Fatal(err)
		}
	}
	images := map[string]string{"mcnet's image": packaging.ImageUser, "an image without USER": ""}
	checked := 0
	for _, p := range tree.Paths() {
		if !strings.HasPrefix(p, "clusters/") || path.Base(p) != "kustomization.yaml" {
			continue
		}
		dir := path.Dir(p)
		res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fsys, "/repo/"+dir)
		if err != nil {
			t.Fatalf("kustomize build %s: %v", dir, err)
		}
		for _, r := range res.Resources() {
			spec, ok := podSpec(t, r.GetKind(), []byte(r.MustYaml()))
			if !ok {
				continue
			}
			for _, c := range spec.Containers {
				checked++
				for image, user := range images {
					if err := admitUser(spec.SecurityContext, c, user); err != nil {
						t.Errorf("%s: %s %s, container %s with %s: %v", dir, r.GetKind(), r.GetName(), c.Name, image, err)
					}
				}
			}
		}
	}
	if checked < 3 {
		t.Fatalf("checked %d containers, want at least the controller, gateway and route agent", checked)
	}
}

// TestAdmitUser checks the rules TestContainersRunAsTheirUser applies, on the shape of
// the defect a real kubelet found: runAsNonRoot without runAsUser on an image without
// USER.
func TestAdmitUser(t *testing.T) {
	yes, uid0, uid1 := true, int64(0), int64(65532)
	priv := &corev1.SecurityContext{Privileged: &yes}
	for _, tc := range []struct {
		name      string
		pod       *corev1.PodSecurityContext
		container *corev1.SecurityContext
		imageUser string
		wantErr   string
	}{
		{"runAsNonRoot, image without USER", &corev1.PodSecurityContext{RunAsNonRoot: &yes}, nil, "", "will run as root"},
		{"runAsNonRoot, image with a name as USER", &corev1.PodSecurityContext{RunAsNonRoot: &yes}, nil, "nonroot", "non-numeric user"},
		{"runAsNonRoot, numeric image USER", &corev1.PodSecurityContext{RunAsNonRoot: &yes}, nil, "65532:65532", ""},
		{"runAsNonRoot with runAsUser", &corev1.PodSecurityContext{RunAsNonRoot: &yes, RunAsUser: &uid1}, nil, "", ""},
		{"runAsNonRoot with runAsUser 0", &corev1.PodSecurityContext{RunAsNonRoot: &yes}, &corev1.SecurityContext{RunAsUser: &uid0}, "65532", "runAsUser 0"},
		{"unprivileged, image without USER", nil, nil, "", "runs as root"},
		{"privileged, numeric image USER", nil, priv, "65532:65532", "runs as uid 65532"},
		{"privileged with runAsUser 0", nil, &corev1.SecurityContext{Privileged: &yes, RunAsUser: &uid0}, "65532:65532", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := admitUser(tc.pod, corev1.Container{Name: "c", SecurityContext: tc.container}, tc.imageUser)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("err = %v, want none", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("err = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

// podSpec returns the pod template of a workload object.
func podSpec(t *testing.T, kind string, data []byte) (*corev1.PodSpec, bool) {
	t.Helper()
	var obj interface{ spec() *corev1.PodSpec }
	switch kind {
	case "Deployment":
		obj = &deployment{}
	case "DaemonSet":
		obj = &daemonSet{}
	case "StatefulSet":
		obj = &statefulSet{}
	case "Pod", "Job", "CronJob", "ReplicaSet":
		t.Fatalf("rendered a %s: teach podSpec its pod template", kind)
	default:
		return nil, false
	}
	if err := yaml.Unmarshal(data, obj); err != nil {
		t.Fatalf("decode %s: %v", kind, err)
	}
	return obj.spec(), true
}

type deployment struct{ appsv1.Deployment }
type daemonSet struct{ appsv1.DaemonSet }
type statefulSet struct{ appsv1.StatefulSet }

func (d *deployment) spec() *corev1.PodSpec  { return &d.Spec.Template.Spec }
func (d *daemonSet) spec() *corev1.PodSpec   { return &d.Spec.Template.Spec }
func (d *statefulSet) spec() *corev1.PodSpec { return &d.Spec.Template.Spec }

// admitUser applies the kubelet's runAsNonRoot check (kuberuntime's verifyRunAsNonRoot:
// the container's securityContext overrides the pod's, and without runAsUser the image's
// USER decides, which must then be numeric) and mcnet's own rule that privileged
// containers run as root and the others do not.
func admitUser(pod *corev1.PodSecurityContext, c corev1.Container, imageUser string) error {
	var nonRoot, privileged bool
	var uid *int64
	if pod != nil {
		nonRoot = pod.RunAsNonRoot != nil && *pod.RunAsNonRoot
		uid = pod.RunAsUser
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsNonRoot != nil {
			nonRoot = *sc.RunAsNonRoot
		}
		if sc.RunAsUser != nil {
			uid = sc.RunAsUser
		}
		privileged = sc.Privileged != nil && *sc.Privileged
	}
	source := "runAsUser"
	if uid == nil {
		source = "the image's USER"
		u, _, _ := strings.Cut(imageUser, ":")
		switch n, err := strconv.ParseInt(u, 10, 64); {
		case u == "":
			uid = new(int64) // no USER: root
		case err != nil:
			if nonRoot {
				return fmt.Errorf("image has non-numeric user (%s), cannot verify user is non-root", u)
			}
			return fmt.Errorf("image has non-numeric user (%s): set runAsUser", u)
		default:
			uid = &n
		}
	}
	switch {
	case nonRoot && *uid == 0 && source == "runAsUser":
		return fmt.Errorf("container's runAsUser 0 breaks non-root policy")
	case nonRoot && *uid == 0:
		return fmt.Errorf("container has runAsNonRoot and image will run as root")
	case privileged && *uid != 0:
		return fmt.Errorf("privileged container runs as uid %d (from %s), want runAsUser: 0", *uid, source)
	case !privileged && *uid == 0:
		return fmt.Errorf("unprivileged container runs as root (from %s), want runAsNonRoot and a runAsUser", source)
	}
	return nil
}
