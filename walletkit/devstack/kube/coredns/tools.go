//go:build tools

// The binary this module builds, imported so that `go mod tidy` keeps its dependencies.
package tools

import _ "github.com/coredns/coredns"
