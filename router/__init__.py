"""The data plane: SLO-aware batching and early drop in front of Triton (KServe v2)."""
