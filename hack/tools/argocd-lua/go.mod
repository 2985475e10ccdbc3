// Argo CD's health-script runtime (see runtime.go): gopher-lua, gopher-json and sigs.k8s.io/yaml at the versions
// Argo CD v3.5.1 pins in its go.mod. hack/build-tools.sh builds it.
module textgen.dev/hack/tools/argocd-lua

go 1.26.0

require (
	github.com/yuin/gopher-lua v1.1.2
	layeh.com/gopher-json v0.0.0-20190114024228-97fed8db8427
	sigs.k8s.io/yaml v1.6.0
)

require go.yaml.in/yaml/v2 v2.4.3 // indirect
