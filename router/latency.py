"""l(b) as the router believes it: profiled curves corrected online by observed batch times.

The profile says how long a batch takes on an idle, well-behaved server; the
router sees the real thing (a slower card, a noisy neighbour, the network).
Per (GPU, model) an exponentially weighted moving average of
observed / profiled is kept and applied multiplicatively, so the sliding
window drops against the latency the server actually delivers (Nexus inflates
its profiles by a fixed 1.15 for the same reason; here the factor is measured).
"""

from __future__ import annotations

from collections.abc import Mapping

from model_repo_tools.profiles import LatencyCurve

# A single wild measurement (a GC pause, a cold cache) must not swing the
# estimate too far in either direction.
_MIN_RATIO = 0.2
_MAX_RATIO = 50.0


class LatencyModel:
    """Corrected l(b) per (gpu, model); curves keyed by (model, gpu_type) as ProfileSet.curves().

    `alpha` is the EWMA weight of a new observation; 0 turns the correction off.
    The first observation of a (gpu, model) replaces the initial 1.0 outright, so a
    server slower than its profile is believed after one batch, not after ten.
    """

    __slots__ = ("_curves", "_alpha", "_ratio")

    def __init__(
        self, curves: Mapping[tuple[str, str], LatencyCurve], *, alpha: float = 0.2
    ) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self._curves = dict(curves)
        self._alpha = alpha
        self._ratio: dict[tuple[str, str], float] = {}

    def curve(self, model: str, gpu_type: str) -> LatencyCurve | None:
        return self._curves.get((model, gpu_type))

    def ratio(self, gpu: str, model: str) -> float:
        """Observed / profiled, 1.0 until the first observation."""
        return self._ratio.get((gpu, model), 1.0)

    def estimate(self, gpu: str, gpu_type: str, model: str, samples: int) -> float:
        """Corrected l(samples) in ms; raises ValueError above the profiled range."""
        return self._curves[(model, gpu_type)].latency(samples) * self._ratio.get((gpu, model), 1.0)

    def observe(self, gpu: str, gpu_type: str, model: str, samples: int, elapsed_ms: float) -> None:
        curve = self._curves.get((model, gpu_type))
        if self._alpha == 0.0 or curve is None or elapsed_ms <= 0 or samples > curve.max_batch:
            return
        sample = min(max(elapsed_ms / curve.latency(samples), _MIN_RATIO), _MAX_RATIO)
        key = (gpu, model)
        old = self._ratio.get(key)
        self._ratio[key] = sample if old is None else old + self._alpha * (sample - old)
