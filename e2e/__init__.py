"""End-to-end tests on the real local control plane (hack/cluster); see e2e/README.md."""
