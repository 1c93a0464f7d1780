//go:build tools

// The binaries this module builds, imported so that `go mod tidy` keeps their dependencies: the
// control plane (API server, controller manager, scheduler) and the node (kubelet, kube-proxy),
// all of one release, so no component is ever skewed against another.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
