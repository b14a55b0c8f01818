//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/e2e/lab/labtest"
)

// BenchmarkDatabases runs the example of docs/databases.md on the suite's lab once per
// cable driver of the replication pair (the primary's cluster prefers WireGuard, or
// every cluster VXLAN) and prints:
//   - the write-availability gap of a SIGKILL of the active gateway in the primary's
//     cluster — the longest time with no acknowledged write, for etcd and PostgreSQL —
//     and the time from the kill until the standby's replay lag is under 1 s, p50 and
//     p99 over MCNET_DB_TRIALS trials (default 3: each costs about 40 s here);
//   - etcd's commit latency (a compare-and-swap transaction as the writer sees it) p50
//     and p99 before any fault, beside the lab's round trip between the gateways;
//   - PostgreSQL's WAL replication throughput: one transaction writing about 100 MB of
//     WAL, committed synchronously, so it returns once the standby has flushed it all.
func BenchmarkDatabases(b *testing.B) {
	labtest.RequireRoot(b)
	trials := 3
	if s := os.Getenv("MCNET_DB_TRIALS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("MCNET_DB_TRIALS=%q: want a positive number of trials", s)
		}
		trials = n
	}
	for _, driver := range []mcnetv1.CableDriver{mcnetv1.CableWireGuard, mcnetv1.CableVXLAN} {
		b.Run(string(driver), func(b *testing.B) {
			for b.Loop() {
				ctx := b.Context()
				d := startDatabaseLabWith(b, connectFleet(mcnetv1.CableVXLAN, driver, mcnetv1.CableVXLAN))

				// Commit latency on a quiet fleet, and the round trip it pays.
				acks, err := d.acks(ctx, "etcd-writer")
				if err != nil {
					b.Fatal(err)
				}
				var lat []time.Duration
				for _, a := range acks {
					lat = append(lat, a.latency)
				}
				p50, p99 := percentiles(lat)
				b.ReportMetric(p50.Seconds()*1000, "ms/etcd-commit-p50")
				b.ReportMetric(p99.Seconds()*1000, "ms/etcd-commit-p99")
				gw, err := activeGateway(ctx, d.primary)
				if err != nil {
					b.Fatal(err)
				}
				var rtt time.Duration
				for _, c := range gw.Status.Connections {
					if c.RTT != nil {
						rtt = max(rtt, c.RTT.Last.Duration)
					}
				}
				b.ReportMetric(rtt.Seconds()*1000, "ms/lab-rtt")

				mbps, err := d.walThroughput(b)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(mbps, "MB/s-wal")

				var etcdGaps, pgGaps, lags []time.Duration
				for range trials {
					if err := waitStandbysPassive(ctx, d.Lab); err != nil {
						b.Fatal(err)
					}
					res, err := d.run(ctx, d.gatewayKill())
					if err != nil {
						b.Fatal(err)
					}
					etcdGaps, pgGaps, lags = append(etcdGaps, res.etcdGap), append(pgGaps, res.pgGap), append(lags, res.lagUnder1s)
				}
				for _, m := range []struct {
					name    string
					samples []time.Duration
				}{{"etcd-gap", etcdGaps}, {"pg-gap", pgGaps}, {"lag-under-1s", lags}} {
					p50, p99 := percentiles(m.samples)
					b.ReportMetric(p50.Seconds(), "s/"+m.name+"-p50")
					b.ReportMetric(p99.Seconds(), "s/"+m.name+"-p99")
				}
				fmt.Printf("databases (%s pair): etcd commit p50 %s p99 %s at RTT %s; WAL %.1f MB/s; gateway SIGKILL over %d trials: etcd gap %v, PostgreSQL gap %v, lag under 1 s after %v\n",
					driver, p50, p99, rtt, mbps, trials, etcdGaps, pgGaps, lags)
			}
		})
	}
}

// walThroughput commits one transaction writing about 100 MB of WAL on the primary and
// returns MB of WAL per second, timed around the commit, which returns once the
// synchronous standby has flushed it all.
func (d *dbLab) walThroughput(b *testing.B) (float64, error) {
	ctx := b.Context()
	lsn := func() (uint64, error) {
		out, err := psql(ctx, d.primary, "pg-primary-0", "SELECT pg_current_wal_lsn()")
		if err != nil {
			return 0, err
		}
		return parseLSN(out)
	}
	if _, err := psql(ctx, d.primary, "pg-primary-0", "CREATE TABLE IF NOT EXISTS bulk (n bigint, pad text)"); err != nil {
		return 0, err
	}
	lsn0, err := lsn()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if _, err := psqlTimeout(ctx, d.primary, "pg-primary-0", "INSERT INTO bulk SELECT g, repeat(md5(g::text), 24) FROM generate_series(1, 110000) g", 5*time.Minute); err != nil {
		return 0, err
	}
	took := time.Since(start)
	lsn1, err := lsn()
	if err != nil {
		return 0, err
	}
	return float64(lsn1-lsn0) / 1e6 / took.Seconds(), nil
}

// parseLSN parses a PostgreSQL LSN, "X/Y" in hexadecimal.
func parseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(strings.TrimSpace(s), "/")
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if !ok || err1 != nil || err2 != nil {
		return 0, fmt.Errorf("LSN %q", s)
	}
	return h<<32 | l, nil
}
