package lab

import (
	"slices"
	"testing"
)

func TestTroubled(t *testing.T) {
	dump := `=== lab x (dir d, logs l)
--- log hub/kubelet.log (last 15 lines)
pod kube-system/fine node=n1 ip=10.0.0.1 ready=False
=== cluster hub
node hub-gw ready=True labels=map[a:b]
node hub-w1 ready=False labels=map[a:b]
node hub-w2 ready=Unknown labels=map[a:b]
pod mcnet-system/mcnet-gateway-1 node=hub-gw ip=10.0.0.2 ready=True 
pod mcnet-system/mcnet-dns-1 node=hub-w1 ip=10.0.0.3 ready=True dns: 2 restarts
=== cluster east
pod mcnet-system/mcnet-controller-1 node=east-w1 ip=10.1.0.3 ready=False controller: CrashLoopBackOff back-off
pod default/unscheduled node= ip= ready= 
service default/web clusterIP=10.96.0.10
`
	want := []string{
		"hub: node hub-w1 ready=False labels=map[a:b]",
		"hub: node hub-w2 ready=Unknown labels=map[a:b]",
		"hub: pod mcnet-system/mcnet-dns-1 node=hub-w1 ip=10.0.0.3 ready=True dns: 2 restarts",
		"east: pod mcnet-system/mcnet-controller-1 node=east-w1 ip=10.1.0.3 ready=False controller: CrashLoopBackOff back-off",
		"east: pod default/unscheduled node= ip= ready= ",
	}
	if got := Troubled(dump, 10); !slices.Equal(got, want) {
		t.Errorf("Troubled:\n got %q\nwant %q", got, want)
	}
	if got := Troubled(dump, 2); len(got) != 3 || got[2] != "(more in the file)" {
		t.Errorf("Troubled with max 2: %q, want 2 lines and a pointer to the file", got)
	}
}
