//go:build tools

// Package tools records the krew command built from this module.
package tools

import _ "sigs.k8s.io/krew/cmd/krew"
