"""The data plane: SLO-aware batching and early drop in front of Triton (KServe v2)."""

from router.native import activate

# TNX_NATIVE=1: the policy and the simulator compiled with mypyc (router.native).
activate(__path__)
