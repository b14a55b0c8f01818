// Package version holds the version stamped into mcnet's binaries at build time.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is set by the linker: -X github.com/mcnet-io/mcnet/internal/version.Version=v0.1.0.
var Version = "v0.0.0-dev"

// Commit is the Git commit the binary was built from, set by the linker.
var Commit = ""

// Info describes a build.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit,omitempty"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// Get returns this binary's build information.
func Get() Info {
	commit := Commit
	if commit == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					commit = s.Value
				}
			}
		}
	}
	return Info{
		Version:   Version,
		Commit:    commit,
		GoVersion: runtime.Version(),
		Platform:  fmt.Sprintf("%s/%s", runtime.GOOS, runtime.GOARCH),
	}
}
