package gitops

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
)

// Module is a Go module pinned by one of the repository's tool modules.
type Module struct {
	Path, Version string
	// Dir is the module's directory in the module cache.
	Dir string
}

// PinnedModule downloads (if needed) the version of module that hack/tools/<tool>
// requires and returns where it is.
func PinnedModule(ctx context.Context, repoRoot, tool, module string) (Module, error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", module)
	cmd.Dir = filepath.Join(repoRoot, "hack", "tools", tool)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var m struct{ Path, Version, Dir, Error string }
	if jerr := json.Unmarshal(out, &m); jerr != nil || err != nil || m.Error != "" || m.Dir == "" {
		return Module{}, fmt.Errorf("go mod download %s in hack/tools/%s: %v %s %s", module, tool, err, m.Error, stderr.String())
	}
	return Module{Path: m.Path, Version: m.Version, Dir: m.Dir}, nil
}

// ReadYAMLDir concatenates the *.yaml files of dir (sorted) into one stream, skipping
// kustomization.yaml.
func ReadYAMLDir(dir string) ([]byte, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var buf bytes.Buffer
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		buf.WriteString("---\n")
		buf.Write(b)
		buf.WriteString("\n")
	}
	if buf.Len() == 0 {
		return nil, fmt.Errorf("no YAML in %s", dir)
	}
	return buf.Bytes(), nil
}
