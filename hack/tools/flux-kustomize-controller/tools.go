//go:build tools

// Package tools records the Flux kustomize-controller command built from this module.
package tools

import _ "github.com/fluxcd/kustomize-controller"
