// Package machine reads the figures the benchmarks print beside their results, so a
// reader can tell a slow path from a busy machine: the CPU time spent and the load.
package machine

import (
	"os"
	"strconv"
	"strings"
)

// BusySeconds is the machine's busy CPU time so far, all CPUs: the first line of
// /proc/stat less idle and iowait, in seconds (USER_HZ is 100). It is 0 when
// /proc/stat cannot be read.
func BusySeconds() float64 {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	var total, idle float64
	for i, f := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseFloat(f, 64)
		total += v
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		}
	}
	return (total - idle) / 100
}

// LoadAverage is the machine's 1-minute load average, as /proc/loadavg says it, "?"
// when it cannot be read.
func LoadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}
