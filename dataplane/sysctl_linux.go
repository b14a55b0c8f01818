package dataplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// applySysctls writes forwarding keys (global) or per-interface keys (the rest).
// Before loosening rp_filter on an interface mcnet does not own, it records the old
// value in the state directory, and restores it once no State needs it any more.
func (d *Dataplane) applySysctls(ctx context.Context, p plan, global bool) error {
	keys := make([]string, 0, len(p.Sysctls))
	for k := range p.Sysctls {
		if strings.HasPrefix(k, "net/ipv4/conf/") != global {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var saved map[string]string
	var errs []error
	if !global {
		var err error
		if saved, err = d.loadSavedSysctls(); err != nil {
			return err
		}
	}
	dirty := false
	for _, k := range keys {
		cur, err := d.k.sysctl.Get(k)
		if err != nil {
			errs = append(errs, fmt.Errorf("read sysctl %s: %w", k, err))
			continue
		}
		if cur == p.Sysctls[k] {
			continue
		}
		if _, ok := saved[k]; !ok && !global && !d.ownsSysctl(k) {
			saved[k], dirty = cur, true
			// Record first: a crash after the write must still be able to restore.
			if err := d.storeSavedSysctls(saved); err != nil {
				return err
			}
		}
		if err := d.k.sysctl.Set(k, p.Sysctls[k]); err != nil {
			errs = append(errs, fmt.Errorf("write sysctl %s: %w", k, err))
			continue
		}
		d.changed(ctx, "Set sysctl", "key", k, "value", p.Sysctls[k])
	}
	if !global {
		errs = append(errs, d.restoreSysctls(ctx, saved, p.Sysctls, dirty))
	}
	return errors.Join(errs...)
}

// restoreSysctls puts back every saved value the plan no longer sets.
func (d *Dataplane) restoreSysctls(ctx context.Context, saved, keep map[string]string, dirty bool) error {
	var errs []error
	for k, v := range saved {
		if _, ok := keep[k]; ok {
			continue
		}
		delete(saved, k)
		dirty = true
		cur, err := d.k.sysctl.Get(k)
		if err != nil || cur == v {
			continue // the interface is gone, or already back
		}
		if err := d.k.sysctl.Set(k, v); err != nil {
			errs = append(errs, fmt.Errorf("restore sysctl %s: %w", k, err))
			continue
		}
		d.changed(ctx, "Restored sysctl", "key", k, "value", v)
	}
	if dirty {
		errs = append(errs, d.storeSavedSysctls(saved))
	}
	return errors.Join(errs...)
}

// ownsSysctl reports whether a key belongs to a link mcnet owns (it goes with it).
func (d *Dataplane) ownsSysctl(key string) bool {
	for _, l := range d.cfg.ownedLinks() {
		if strings.HasPrefix(key, "net/ipv4/conf/"+l+"/") {
			return true
		}
	}
	return false
}

func (d *Dataplane) savedSysctlsPath() string {
	return filepath.Join(d.cfg.StateDir, "sysctl-saved.json")
}

func (d *Dataplane) loadSavedSysctls() (map[string]string, error) {
	saved := map[string]string{}
	b, err := os.ReadFile(d.savedSysctlsPath())
	if errors.Is(err, os.ErrNotExist) {
		return saved, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read saved sysctls: %w", err)
	}
	if err := json.Unmarshal(b, &saved); err != nil {
		return nil, fmt.Errorf("read saved sysctls %s: %w", d.savedSysctlsPath(), err)
	}
	return saved, nil
}

func (d *Dataplane) storeSavedSysctls(saved map[string]string) error {
	path := d.savedSysctlsPath()
	if len(saved) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove saved sysctls: %w", err)
		}
		return nil
	}
	b, _ := json.Marshal(saved)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save sysctls: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("save sysctls: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("save sysctls: %w", err)
	}
	return nil
}

// procSysctl is the real sysctlHandle: /proc/sys of the caller's network namespace.
type procSysctl struct{}

func (procSysctl) Get(key string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc/sys", key))
	return strings.TrimSpace(string(b)), err
}

func (procSysctl) Set(key, value string) error {
	return os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644)
}
