"""l(b) as the router believes it: the profile, corrected online by observed batch times.

The profile says how long a batch takes on an idle, well-behaved server; the
router sees the real thing: a slower card or a noisy neighbour (which scale
every batch), and the RPC, codec and scheduling cost of one call (which a
tiny model's profile cannot carry, and which does not grow with the batch).
Per (GPU, model) the router therefore fits

    l̂(b) = scale · l(b) + overhead + spread · σ

by weighted least squares of observed batch times against profiled ones
(σ: the residuals' standard deviation), forgetting old observations in count
(`alpha` per observation) and in time (`decay_ms`). Nexus inflates its
profiles by a fixed 1.15 for the same reason; here the correction is measured.

Lock-out is impossible by construction (issue 8: a correction that grew while
every request was dropped never saw another batch, so it never came down):

- **The correction fades.** It is applied with weight e^(-age/`decay_ms`),
  age being the time since the last observation: an estimate that no batch
  has confirmed for a few `decay_ms` is the profile again.
- **Good news is believed at once.** An observation under half of the fit's
  prediction restarts the fit from it: the overload that made batches slow is
  over, and waiting for an average to come down would keep dropping.
- **The policy probes** (`router.policy`): a session whose every request looks
  hopeless still sends one real batch now and then, so observations never stop.

With every observation at one batch size, scale and overhead cannot be told
apart; a small ridge pull of scale toward 1 then puts the whole difference in
the overhead, which is the safe reading for the batch sizes the sliding window
runs (never above the planned batch).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from model_repo_tools.profiles import LatencyCurve


@dataclass(slots=True, frozen=True)
class Correction:
    """What the router applies on top of one (GPU, model)'s profile right now."""

    scale: float
    overhead_ms: float
    sigma_ms: float
    weight: float  # e^(-age/decay): 0 is the profile as is, 1 the fit as is


_NONE = Correction(1.0, 0.0, 0.0, 0.0)  # the profile as it is

# Bounds on the fitted scale: a wild fit (a GC pause among a handful of points at
# nearly one batch size) must not send the estimate anywhere.
_MIN_SCALE = 0.2
_MAX_SCALE = 20.0
# Ridge pull of scale toward 1, relative to the data's weight x mean profiled time²:
# with profiled times spread by less than ~15 % (CV), the fit reads the difference
# as overhead (see the docstring).
_RIDGE = 0.02
# An estimate is never below this share of the profile, whatever a fit says.
_FLOOR = 0.2
# An observation under this share of the fit's prediction restarts the fit.
_GOOD_NEWS = 0.5


class _Fit:
    """Exponentially weighted sums of (x = profiled ms, y = observed ms) and the fit of them."""

    __slots__ = ("w", "x", "y", "xx", "xy", "yy", "t", "scale", "overhead", "sigma")

    def __init__(self) -> None:
        self.w = self.x = self.y = self.xx = self.xy = self.yy = 0.0
        self.t = -math.inf
        self.scale, self.overhead, self.sigma = 1.0, 0.0, 0.0

    def add(self, x: float, y: float, now: float, alpha: float, decay_ms: float) -> None:
        keep = 1.0 - alpha
        if self.t > -math.inf and now > self.t:
            keep *= math.exp(-(now - self.t) / decay_ms)
        self.w = keep * self.w + alpha
        self.x = keep * self.x + alpha * x
        self.y = keep * self.y + alpha * y
        self.xx = keep * self.xx + alpha * x * x
        self.xy = keep * self.xy + alpha * x * y
        self.yy = keep * self.yy + alpha * y * y
        self.t = max(self.t, now)
        self._solve()

    def restart(self, x: float, y: float, now: float) -> None:
        """Forget everything but this observation (which then counts in full)."""
        self.w, self.x, self.y = 1.0, x, y
        self.xx, self.xy, self.yy = x * x, x * y, y * y
        self.t = now
        self._solve()

    def _solve(self) -> None:
        w, x, y = self.w, self.x, self.y
        mx = x / w
        ridge = _RIDGE * w * mx * mx
        # Normal equations of min Σw(y - s·x - c)² + ridge·(s - 1)²:
        #   [xx + ridge, x] [s]   [xy + ridge]
        #   [x,          w] [c] = [y        ]
        a, b, d = self.xx + ridge, x, w
        det = a * d - b * b
        s = 1.0 if det <= 1e-12 * a * d else ((self.xy + ridge) * d - b * y) / det
        s = min(max(s, _MIN_SCALE), _MAX_SCALE)
        c = (y - s * x) / w
        rss = self.yy - 2 * s * self.xy - 2 * c * y + s * s * self.xx + 2 * s * c * x + c * c * w
        self.scale, self.overhead = s, c
        self.sigma = math.sqrt(max(rss, 0.0) / w)


def _faded(fit: _Fit, now: float, decay_ms: float) -> float:
    """The weight a fit is applied with at `now`: e^(-age/decay), 1 while fresh."""
    age = now - fit.t
    return 1.0 if age <= 0.0 else math.exp(-age / decay_ms)


class Estimator:
    """l̂(b) of one model on one GPU: its profile as a table, and its fit once observed.

    `LatencyModel.estimator` hands out one per (GPU, GPU type, model), the same object for
    as long as the model lives, so the policy can hold it where it would otherwise look up the
    profile and the fit by name a few times per request.
    """

    __slots__ = ("curve", "table", "max_batch", "monotone", "fit", "_spread", "_decay")

    def __init__(
        self, curve: LatencyCurve, table: tuple[float, ...], spread: float, decay: float
    ) -> None:
        self.curve = curve
        self.table = table
        self.max_batch = len(table) - 1
        # Whether the profile's l(b) never falls as b grows (the policy's backlog bound).
        ys = curve.latencies_ms
        self.monotone = all(a <= b for a, b in zip(ys, ys[1:], strict=False))
        self.fit: _Fit | None = None
        self._spread = spread
        self._decay = decay

    def profiled(self, samples: int) -> float:
        """The profile's l(samples) in ms; raises ValueError above the profiled range."""
        table = self.table
        if 0 < samples < len(table):
            return table[samples]
        return self.curve.latency(samples)

    def estimate(self, samples: int, now: float) -> float:
        """Corrected l(samples) in ms at time `now`; raises ValueError above the profiled range."""
        base = self.profiled(samples)
        fit = self.fit
        if fit is None:
            return base
        fitted = fit.scale * base + fit.overhead + self._spread * fit.sigma
        return max(base + _faded(fit, now, self._decay) * (fitted - base), _FLOOR * base)


class LatencyModel:
    """Corrected l(b) per (gpu, model); curves keyed by (model, gpu_type) as ProfileSet.curves().

    - `alpha`: weight of a new observation (0 turns the correction off).
    - `spread`: how many σ of the residuals to add: a noisy server is planned for
      at its bad-but-usual latency, not its mean (in simulation at 2x load with 10 %
      noise, 2 σ keeps late answers well under 1 %).
    - `decay_ms`: the correction is applied with weight e^(-age/decay_ms), age being
      the time since its last observation; older observations also count for less
      in the fit than a new one after a gap.
    """

    __slots__ = (
        "_curves",
        "_tables",
        "_alpha",
        "_spread",
        "_decay",
        "_fits",
        "_estimators",
    )

    def __init__(
        self,
        curves: Mapping[tuple[str, str], LatencyCurve],
        *,
        alpha: float = 0.2,
        spread: float = 2.0,
        decay_ms: float = 2000.0,
    ) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if spread < 0:
            raise ValueError(f"spread must be >= 0, got {spread}")
        if decay_ms <= 0:
            raise ValueError(f"decay_ms must be > 0, got {decay_ms}")
        self._curves = dict(curves)
        # l(b) at every integer batch (`LatencyCurve.latency_table`; the policy asks a few
        # times per request, and an index costs less than a bisection), made once per curve
        # and shared by the estimators of every GPU of its type.
        self._tables: dict[tuple[str, str], tuple[float, ...]] = {}
        self._alpha = alpha
        self._spread = spread
        self._decay = decay_ms
        self._fits: dict[tuple[str, str], _Fit] = {}
        # By GPU, GPU type (a GPU id may come back as another type in a new plan), model.
        self._estimators: dict[str, dict[str, dict[str, Estimator]]] = {}

    def curve(self, model: str, gpu_type: str) -> LatencyCurve | None:
        return self._curves.get((model, gpu_type))

    def models(self) -> set[str]:
        return {m for m, _ in self._curves}

    def correction(self, gpu: str, model: str, now: float) -> Correction:
        fit = self._fits.get((gpu, model))
        if fit is None:
            return _NONE
        return Correction(fit.scale, fit.overhead, fit.sigma, _faded(fit, now, self._decay))

    def corrections(self, now: float) -> dict[tuple[str, str], Correction]:
        """(gpu, model) → its correction now, for every pair observed so far (metrics)."""
        return {key: self.correction(*key, now) for key in self._fits}

    def estimator(self, gpu: str, gpu_type: str, model: str) -> Estimator:
        """l̂ of `model` on `gpu` (of `gpu_type`): the same object at every call, its fit
        (shared by the GPU's estimators of `model`, whatever their type) following what
        `observe` sees. Raises KeyError for a pair without a profile."""
        by_type = self._estimators.get(gpu)
        if by_type is None:
            by_type = self._estimators[gpu] = {}
        on = by_type.get(gpu_type)
        if on is None:
            on = by_type[gpu_type] = {}
        e = on.get(model)
        if e is None:
            key = (model, gpu_type)
            curve = self._curves[key]
            table = self._tables.get(key)
            if table is None:
                table = self._tables[key] = curve.latency_table()
            e = on[model] = Estimator(curve, table, self._spread, self._decay)
            e.fit = self._fits.get((gpu, model))
        return e

    def estimate(self, gpu: str, gpu_type: str, model: str, samples: int, now: float) -> float:
        """Corrected l(samples) in ms at time `now`; raises ValueError above the profiled range."""
        return self.estimator(gpu, gpu_type, model).estimate(samples, now)

    def observe(
        self, gpu: str, gpu_type: str, model: str, samples: int, elapsed_ms: float, now: float
    ) -> None:
        if self._alpha == 0.0 or (model, gpu_type) not in self._curves or elapsed_ms <= 0:
            return
        e = self.estimator(gpu, gpu_type, model)
        if samples > e.max_batch:
            return
        x = e.profiled(samples)
        fit = e.fit
        if fit is None:
            fit = self._fits[(gpu, model)] = _Fit()
            for on in self._estimators[gpu].values():  # one fit per (GPU, model), any type
                other = on.get(model)
                if other is not None:
                    other.fit = fit
            fit.restart(x, elapsed_ms, now)
        elif elapsed_ms < _GOOD_NEWS * (fit.scale * x + fit.overhead):
            fit.restart(x, elapsed_ms, now)
        else:
            fit.add(x, elapsed_ms, now, self._alpha, self._decay)
