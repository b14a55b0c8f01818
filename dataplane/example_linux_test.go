package dataplane_test

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/mcnet-io/mcnet/dataplane"
)

// A gateway process: create the Dataplane once, publish the public key, then call
// Apply with the whole State whenever the broker's view or the gateway Lease changes,
// and Stats for health and metrics. Cleanup on uninstall or when stepping down for good.
func Example() {
	ctx := context.Background()
	dp, err := dataplane.New(dataplane.Config{StateDir: "/var/lib/mcnet"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer dp.Close()
	pub, err := dp.PublicKey() // publish in this cluster's Endpoint on the broker
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = pub
	remoteKey, _ := dataplane.ParseKey("FhzLAapFunc3t/pM0ytD9Tg9M8H2IpsaR6dEy34m9Wo=")
	err = dp.Apply(ctx, dataplane.State{
		ClusterID:  "east",
		LocalCIDRs: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")},
		Gateway:    &dataplane.Gateway{}, // nil on the route agent of other nodes...
		// ActiveGateway: netip.MustParseAddr("192.168.1.10"), // ...which set this instead
		Remotes: []dataplane.Remote{{
			ClusterID: "west",
			CIDRs:     []netip.Prefix{netip.MustParsePrefix("10.2.0.0/16")},
			Cable: dataplane.Cable{
				Driver:    dataplane.DriverWireGuard,
				Endpoints: []netip.Addr{netip.MustParseAddr("198.18.0.2")},
				PublicKey: remoteKey,
			},
		}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	stats, _ := dp.Stats(ctx) // LastHandshake, RxBytes, TxBytes per remote
	_ = stats
}
