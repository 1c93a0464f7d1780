//go:build tools

// The helm client of a pinned Helm v4 release, imported so that `go mod tidy` keeps its dependencies.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
