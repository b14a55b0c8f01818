package scale

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
)

// CPUTicks returns a process's user+system time in clock ticks (1/100 s on Linux),
// from /proc/PID/stat.
func CPUTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("pid %d: malformed stat", pid)
	}
	f := strings.Fields(string(b[i+2:]))
	// Fields after the command: state is 0, utime 11, stime 12.
	if len(f) < 13 {
		return 0, fmt.Errorf("pid %d: short stat", pid)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("pid %d: stat times: %v %v", pid, err1, err2)
	}
	return u + s, nil
}

// Metrics are the counters and gauges of a Prometheus text exposition, by series
// (name and labels as written), with helpers to sum by name.
type Metrics map[string]float64

// Scrape reads an API server's /metrics.
func Scrape(ctx context.Context, cs kubernetes.Interface) (Metrics, error) {
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("scrape /metrics: %w", err)
	}
	m := Metrics{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		m[line[:i]] = v
	}
	return m, sc.Err()
}

// Sum adds every series of the metric name whose labels contain all of the given
// label pairs (`key="value"`).
func (m Metrics) Sum(name string, labels ...string) float64 {
	var total float64
	for series, v := range m {
		n, rest, _ := strings.Cut(series, "{")
		if n != name {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				ok = false
			}
		}
		if ok {
			total += v
		}
	}
	return total
}

// Peer is one WireGuard peer as the device's UAPI reports it.
type Peer struct {
	PublicKey string // base64
	Endpoint  string // ip:port
}

// WireGuardPeers reads the peers of every userspace WireGuard device in the mount
// namespace of process pid (its /var/run/wireguard UAPI sockets), as `wg show` would.
func WireGuardPeers(pid int) (map[string]Peer, error) {
	socks, err := filepath.Glob(fmt.Sprintf("/proc/%d/root/var/run/wireguard/*.sock", pid))
	if err != nil {
		return nil, err
	}
	if len(socks) == 0 {
		return nil, fmt.Errorf("process %d has no WireGuard UAPI socket", pid)
	}
	peers := map[string]Peer{}
	for _, sock := range socks {
		if err := readUAPI(sock, peers); err != nil {
			return nil, err
		}
	}
	return peers, nil
}

func readUAPI(sock string, peers map[string]Peer) error {
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return fmt.Errorf("WireGuard UAPI %s: %w", sock, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("get=1\n\n")); err != nil {
		return err
	}
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 1<<16), 1<<16)
	var cur *Peer
	flush := func() {
		if cur != nil {
			peers[cur.PublicKey] = *cur
		}
	}
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "":
			flush()
			return nil
		case "errno":
			if v != "0" {
				return fmt.Errorf("WireGuard UAPI %s: errno %s", sock, v)
			}
		case "public_key":
			flush()
			b, err := hex.DecodeString(v)
			if err != nil {
				return fmt.Errorf("WireGuard UAPI %s: public_key %q: %w", sock, v, err)
			}
			cur = &Peer{PublicKey: base64.StdEncoding.EncodeToString(b)}
		case "endpoint":
			if cur != nil {
				cur.Endpoint = v
			}
		}
	}
	flush()
	return sc.Err()
}

// Percentile returns the p-th percentile (0..100) of ds by nearest rank.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// DirSize returns the bytes and files of a tree, and what it takes on disk (blocks).
func DirSize(dir string) (bytes, onDisk int64, files int, err error) {
	err = filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		files++
		bytes += info.Size()
		onDisk += (info.Size() + 4095) / 4096 * 4096
		return nil
	})
	return bytes, onDisk, files, err
}
