//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/e2e/lab"
	"github.com/mcnet-io/mcnet/e2e/lab/labtest"
)

// BenchmarkDatabases runs the example of docs/databases.md on the suite's lab once per
// cable driver of the replication pair (the primary's cluster prefers WireGuard, or
// every cluster VXLAN) and prints:
//   - etcd's commit latency (a compare-and-swap transaction as the writer sees it) p50
//     and p99 before any fault, beside the lab's round trip between the gateways;
//   - PostgreSQL's WAL replication throughput: one transaction writing about 100 MB of
//     WAL, committed synchronously, so it returns once the standby has flushed it all;
//   - the replication protocol's throughput across the pair against the plain routed
//     path: a base backup of the primary streamed to the standby's pod in the other
//     cluster, and to a pod on another node of the primary's own cluster (node to node,
//     no tunnel: the lab's plain routed path, as BenchmarkConnect's baseline);
//   - for each fault of TestDatabases, run on its own — SIGKILL of the active gateway in
//     the primary's cluster, power-off of its node (5 s), a 60 s broker outage, a cable
//     driver switch of the primary's cluster through Git (to the other driver and back
//     on alternate trials), the broker's cluster (an etcd member) cut off the WAN for
//     15 s — the write-availability gap (the longest time with no acknowledged write,
//     for etcd and PostgreSQL; etcd only for the WAN cut, which PostgreSQL does not
//     cross) and the time from the repair until the standby's replay lag is under 1 s,
//     p50 and p99 over MCNET_DB_TRIALS trials (default 3; one trial of all five costs
//     about 5 min here).
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
				benchDatabases(b, driver, trials)
			}
		})
	}
}

// dbFault is one fault of BenchmarkDatabases, made anew for every trial.
type dbFault struct {
	name string
	// etcdOnly says PostgreSQL's path does not cross the fault.
	etcdOnly bool
	make     func(trial int) fault
}

func benchDatabases(b *testing.B, driver mcnetv1.CableDriver, trials int) {
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
	commitP50, commitP99 := percentiles(lat)
	b.ReportMetric(commitP50.Seconds()*1000, "ms/etcd-commit-p50")
	b.ReportMetric(commitP99.Seconds()*1000, "ms/etcd-commit-p99")
	gw := waitActiveGateway(b, d.primary)
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
	across, plain, err := d.baseBackupThroughputs(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(across, "MB/s-basebackup-"+string(driver))
	b.ReportMetric(plain, "MB/s-basebackup-plain")
	fmt.Printf("databases (%s pair): etcd commit p50 %s p99 %s at RTT %s; WAL %.1f MB/s; base backup %.1f MB/s across the pair, %.1f MB/s plain routed\n",
		driver, commitP50, commitP99, rtt, mbps, across, plain)

	other := map[mcnetv1.CableDriver]mcnetv1.CableDriver{mcnetv1.CableWireGuard: mcnetv1.CableVXLAN, mcnetv1.CableVXLAN: mcnetv1.CableWireGuard}[driver]
	faults := []dbFault{
		{name: "sigkill", make: func(int) fault { return d.gatewayKill() }},
		{name: "poweroff", make: func(int) fault { return d.gatewayPowerOff(5 * time.Second) }},
		{name: "broker60s", make: func(int) fault { return d.brokerOutage(60 * time.Second) }},
		{name: "cableswitch", make: func(trial int) fault {
			if trial%2 == 0 {
				return d.cableSwitch(other)
			}
			return d.cableSwitch(driver)
		}},
		{name: "wancut", etcdOnly: true, make: func(int) fault { return d.memberCutOff(15 * time.Second) }},
	}
	for _, f := range faults {
		var etcdGaps, pgGaps, lags []time.Duration
		for trial := range trials {
			if err := waitStandbysPassive(ctx, d.Lab); err != nil {
				b.Fatal(err)
			}
			res, err := d.run(ctx, f.make(trial))
			if err != nil {
				b.Fatal(err)
			}
			etcdGaps, pgGaps, lags = append(etcdGaps, res.etcdGap), append(pgGaps, res.pgGap), append(lags, res.lagUnder1s)
		}
		metrics := []struct {
			name    string
			samples []time.Duration
		}{{"etcd-gap", etcdGaps}, {"pg-gap", pgGaps}, {"lag-under-1s", lags}}
		if f.etcdOnly {
			metrics = metrics[:1]
		}
		for _, m := range metrics {
			p50, p99 := percentiles(m.samples)
			b.ReportMetric(p50.Seconds(), "s/"+f.name+"-"+m.name+"-p50")
			b.ReportMetric(p99.Seconds(), "s/"+f.name+"-"+m.name+"-p99")
		}
		fmt.Printf("databases (%s pair): %s over %d trials: etcd gap %v, PostgreSQL gap %v, lag under 1 s after %v\n",
			driver, f.name, trials, round(etcdGaps), round(pgGaps), round(lags))
	}
}

// round rounds durations to 10 ms for printing.
func round(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(10 * time.Millisecond)
	}
	return out
}

// baseBackupScript streams a base backup of the primary at $1 over the replication
// protocol into wc, and prints its size and how long it took.
const baseBackupScript = `set -eu
export PGPASSWORD="$POSTGRES_PASSWORD"
start=$(date +%s%N)
n=$(pg_basebackup -h "$1" -U replicator -c fast -X none --no-manifest -F t -D - 2>/tmp/basebackup.err | wc -c)
end=$(date +%s%N)
if [ "$n" -lt 1000000 ]; then cat /tmp/basebackup.err >&2; exit 1; fi
echo "basebackup $n $((end - start))"`

// baseBackupThroughputs times a base backup of the primary streamed to the standby's
// pod across the pair, and to a pod on a gateway node of the primary's own cluster
// (the primary runs on the worker), in MB/s.
func (d *dbLab) baseBackupThroughputs(ctx context.Context) (across, plain float64, err error) {
	node := d.primary.Gateways()[0].Name
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "pg-plain", Namespace: dbNamespace},
		Spec: corev1.PodSpec{
			NodeName:        node,
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65532)},
			Containers: []corev1.Container{{
				Name: "postgres", Image: "ghcr.io/mcnet-io/postgresql:15", Command: []string{"sleep", "infinity"},
				Env: []corev1.EnvVar{{Name: "POSTGRES_PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "pg-auth"}, Key: "password"}}}},
			}},
		},
	}
	if _, err := d.primary.Client.CoreV1().Pods(dbNamespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return 0, 0, err
	}
	if err := lab.Eventually(ctx, 2*time.Minute, func(ctx context.Context) error {
		_, err := d.primary.Exec(ctx, dbNamespace, "pg-plain", "postgres", "true")
		return err
	}); err != nil {
		return 0, 0, fmt.Errorf("pod pg-plain on %s: %w", node, err)
	}
	primary, err := d.primary.Client.CoreV1().Pods(dbNamespace).Get(ctx, "pg-primary-0", metav1.GetOptions{})
	if err != nil {
		return 0, 0, err
	}
	if primary.Spec.NodeName == node {
		return 0, 0, fmt.Errorf("pg-primary-0 runs on %s too: the plain path would not leave the node", node)
	}
	timed := func(c *lab.Cluster, pod, host string) (float64, error) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		out, err := c.Exec(ctx, dbNamespace, pod, "postgres", "sh", "-c", baseBackupScript, "sh", host)
		if err != nil {
			return 0, fmt.Errorf("base backup to %s/%s: %w", c.Name, pod, err)
		}
		for _, line := range strings.Split(out, "\n") {
			var n, ns int64
			if _, err := fmt.Sscanf(line, "basebackup %d %d", &n, &ns); err == nil && ns > 0 {
				return float64(n) / 1e6 / (float64(ns) / 1e9), nil
			}
		}
		return 0, fmt.Errorf("base backup to %s/%s printed %q", c.Name, pod, out)
	}
	if across, err = timed(d.standby, "pg-standby-0", "pg-primary."+dbNamespace+".svc.clusterset.local"); err != nil {
		return 0, 0, err
	}
	if plain, err = timed(d.primary, "pg-plain", primary.Status.PodIP); err != nil {
		return 0, 0, err
	}
	return across, plain, nil
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
