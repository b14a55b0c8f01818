//go:build tools

// Package tools records the wireguard-go command built from this module.
package tools

import _ "golang.zx2c4.com/wireguard"
