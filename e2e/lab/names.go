package lab

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Prefix starts the name of every network namespace the lab creates, followed by the
// run id and a dash, so leftovers of any run are recognisable.
const Prefix = "mcl"

// stateDir holds one owner record per running lab. It lives on the host's /run so a
// record does not outlive a reboot, like the namespaces it describes.
var stateDir = "/run/mcnet-lab"

// owner records which process owns a run, so CleanStale never removes a live lab.
type owner struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"startTime"` // from /proc/PID/stat, guards against PID reuse
	Dir       string `json:"dir"`
	Command   string `json:"command"`
}

// newRunID returns five random lowercase letters and digits: short because network
// namespace names also end up in log lines people read.
func newRunID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// runIDOf extracts the run id from a namespace name, or "" if it is not the lab's.
func runIDOf(netns string) string {
	rest, ok := strings.CutPrefix(netns, Prefix)
	if !ok {
		return ""
	}
	id, _, ok := strings.Cut(rest, "-")
	if !ok || id == "" {
		return ""
	}
	return id
}

func writeOwner(runID, dir string) error {
	st, err := procStartTime(os.Getpid())
	if err != nil {
		return err
	}
	exe, _ := os.Executable()
	b, err := json.Marshal(owner{PID: os.Getpid(), StartTime: st, Dir: dir, Command: filepath.Base(exe)})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return fmt.Errorf("record lab owner: %w", err)
	}
	return os.WriteFile(filepath.Join(stateDir, runID+".json"), b, 0o644)
}

func readOwner(runID string) (owner, error) {
	var o owner
	b, err := os.ReadFile(filepath.Join(stateDir, runID+".json"))
	if err != nil {
		return o, err
	}
	return o, json.Unmarshal(b, &o)
}

func removeOwner(runID string) error {
	err := os.Remove(filepath.Join(stateDir, runID+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// alive reports whether the recorded owner process is still the one running.
func (o owner) alive() bool {
	st, err := procStartTime(o.PID)
	return err == nil && st == o.StartTime
}

// procStartTime reads field 22 of /proc/PID/stat (start time in clock ticks).
func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name in field 2 may contain spaces; fields after it are plain.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}
