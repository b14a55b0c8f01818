package packaging

import (
	"bytes"
	"fmt"
	"path"
	"text/template"

	"sigs.k8s.io/yaml"
)

// Plugin is the part of krew's Plugin manifest (krew.googlecontainertools.github.com/v1alpha2)
// that mcnet fills in; decoding strictly into it catches misspelt fields.
type Plugin struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version          string           `json:"version"`
		Homepage         string           `json:"homepage"`
		ShortDescription string           `json:"shortDescription"`
		Description      string           `json:"description"`
		Caveats          string           `json:"caveats,omitempty"`
		Platforms        []PluginPlatform `json:"platforms"`
	} `json:"spec"`
}

// PluginPlatform is one platforms[] entry of a krew manifest.
type PluginPlatform struct {
	Selector struct {
		MatchLabels map[string]string `json:"matchLabels"`
	} `json:"selector"`
	URI    string `json:"uri"`
	Sha256 string `json:"sha256"`
	Bin    string `json:"bin"`
	Files  []struct {
		From string `json:"from"`
		To   string `json:"to"`
	} `json:"files"`
}

// ParsePlugin decodes a krew manifest, rejecting unknown fields.
func ParsePlugin(data []byte) (*Plugin, error) {
	var p Plugin
	if err := yaml.UnmarshalStrict(data, &p); err != nil {
		return nil, fmt.Errorf("parse krew manifest: %w", err)
	}
	return &p, nil
}

// RenderManifest fills in krew.yaml, a krew-release-bot template, for tag: `{{ .TagName }}`
// is the tag, and `{{ addURIAndSha "URL" .TagName }}` becomes the `uri:` and `sha256:`
// lines, the sum taken from sums keyed by the URL's file name (the bot downloads the
// release asset instead; the bytes are the same). The bot and `make dist` so produce the
// same manifest from one file.
func RenderManifest(tmpl []byte, tag string, sums map[string]string) ([]byte, error) {
	funcs := template.FuncMap{
		"addURIAndSha": func(url, tag string) (string, error) {
			var u bytes.Buffer
			t, err := template.New("url").Parse(url)
			if err != nil {
				return "", err
			}
			if err := t.Execute(&u, struct{ TagName string }{tag}); err != nil {
				return "", err
			}
			sum, ok := sums[path.Base(u.String())]
			if !ok {
				return "", fmt.Errorf("no archive %s was built for %s", path.Base(u.String()), u.String())
			}
			// The same text, indentation included, as krew-release-bot's addURIAndSha.
			return fmt.Sprintf("uri: %s\n    sha256: %s", u.String(), sum), nil
		},
	}
	t, err := template.New("krew.yaml").Option("missingkey=error").Funcs(funcs).Parse(string(tmpl))
	if err != nil {
		return nil, fmt.Errorf("parse krew.yaml template: %w", err)
	}
	var out bytes.Buffer
	if err := t.Execute(&out, struct{ TagName string }{tag}); err != nil {
		return nil, fmt.Errorf("render krew.yaml: %w", err)
	}
	return out.Bytes(), nil
}
