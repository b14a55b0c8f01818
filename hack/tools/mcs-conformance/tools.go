//go:build tools

// Package tools records the conformance suite built from this module.
package tools

import _ "sigs.k8s.io/mcs-api/conformance"
