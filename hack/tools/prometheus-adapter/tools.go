//go:build tools

// Package tools records the main package hack/build-tools.sh builds from this module, so that
// `go mod tidy` keeps its dependencies in go.sum.
package tools

import _ "sigs.k8s.io/prometheus-adapter/cmd/adapter"
