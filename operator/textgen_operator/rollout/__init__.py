"""Warmup-aware rolling upgrades: surge pods warm up before any old pod stops, capacity is kept, a revision that
fails is rolled back. `planner` decides (pure, table-tested), `statefulset` reads and writes Kubernetes bodies
(pure), `step` joins them for the reconciler, `act` is the only module here that sends requests."""
