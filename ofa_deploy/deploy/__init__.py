"""Deployment: compiled bundles with manifests, their verification and benchmarks (the graph and its
writers are in :mod:`ofa_deploy.graph`)."""
