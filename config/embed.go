// Package config embeds the manifests generated from mcnet's API types (make generate), so
// the render engine ships them inside the plugin binary.
package config

import "embed"

// CRDs holds the generated CustomResourceDefinitions, one file per kind, under crd/.
//
//go:embed crd/*.yaml
var CRDs embed.FS
