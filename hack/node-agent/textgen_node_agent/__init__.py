"""The local node agent: plays the kubelet for a few nodes of its own and runs their pods as local processes.

Development and test infrastructure of this repository (started by `hack/cluster up`); never shipped in an
image. See hack/node-agent/README.md for what it does and what differs from a real kubelet.
"""
