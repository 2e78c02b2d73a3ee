"""Local Triton fleets (the embedded default), Kubernetes, the demo and the `tnx` CLI root."""
