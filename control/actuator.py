"""Actuation: turning a plan into Triton model-repository calls, make before break.

The current state is read back from each server's repository index (the READY
models and their live `max_batch_size`), so a restarted control plane
reconciles instead of reloading. A model is loaded where the new plan needs it
and the server lacks it (or holds it with too small a batch), with a JSON
config override built from `model_config_pb2`: max batch at least the plan's,
one instance on the plan's GPU, no dynamic batching (the router batches).
Loads are retried (tenacity, the backoff doubling); one that still fails takes
its allocations out of the plan the routers get (listed `unplaced` with the
reason), never silently. Unloads come last, after the routers have switched to
the new plan and drained.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)
from tritonclient.grpc import model_config_pb2 as mc

from control.ensembles import ensemble_steps, with_steps
from control.types import Allocation, GpuPlan, Plan, Unplaced
from model_repo_tools.config import parse_pbtxt, to_override_json
from model_repo_tools.fleet import Fleet, FleetGpu
from model_repo_tools.triton_client import TritonServer
from tnx.errors import RepositoryError, ServerError

log = logging.getLogger(__name__)

State = dict[str, dict[str, int]]  # gpu id → {model: loaded max_batch_size}


def desired_state(plan: Plan) -> State:
    """What each GPU must hold for `plan`: model → the largest batch the plan runs it at."""
    out: State = {}
    for g in plan.gpus:
        models = out.setdefault(g.gpu, {})
        for a in g.allocations:
            models[a.model] = max(models.get(a.model, 0), a.batch)
    return out


@dataclass(slots=True)
class Changes:
    loads: list[tuple[str, str, int]] = field(default_factory=list)  # (gpu, model, max batch)
    unloads: list[tuple[str, str]] = field(default_factory=list)  # (gpu, model)


def changes(current: State, desired: State) -> Changes:
    """Pure: loads for what `desired` needs and `current` lacks; unloads for the rest."""
    out = Changes()
    for gpu, models in desired.items():
        have = current.get(gpu, {})
        for model, batch in sorted(models.items()):
            if model not in have or have[model] < batch:
                out.loads.append((gpu, model, batch))
    for gpu, have in current.items():
        for model in sorted(have):
            if model not in desired.get(gpu, {}):
                out.unloads.append((gpu, model))
    return out


def effective_plan(plan: Plan, failed: Mapping[tuple[str, str], str]) -> Plan:
    """`plan` without the allocations whose model failed to load on their GPU."""
    if not failed:
        return plan
    gpus, unplaced = [], list(plan.unplaced)
    for g in plan.gpus:
        keep: list[Allocation] = []
        for a in g.allocations:
            why = failed.get((g.gpu, a.model))
            if why is None:
                keep.append(a)
            else:
                unplaced.append(
                    Unplaced(
                        session=a.session,
                        rate=a.rate,
                        reason=f"load of {a.model} on {g.gpu} failed: {why}",
                        model=a.model,
                    )
                )
        if keep:
            gpus.append(
                GpuPlan(
                    gpu=g.gpu, gpu_type=g.gpu_type, duty_cycle_ms=g.duty_cycle_ms, allocations=keep
                )
            )
    return Plan(version=plan.version, gpus=gpus, unplaced=unplaced)


@dataclass(slots=True)
class ApplyResult:
    plan: Plan  # what the routers may use: the plan less failed loads
    loaded: list[tuple[str, str]] = field(default_factory=list)
    failed: dict[tuple[str, str], str] = field(default_factory=dict)
    pending_unloads: list[tuple[str, str]] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)  # gpu id → why it was not read


def _gpu_index(gpu_id: str) -> int:
    """'triton-2/1' → 1: the GPU's index on its server (DESIGN.md's ids)."""
    tail = gpu_id.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class Actuator:
    def __init__(
        self,
        fleet: Fleet,
        repo: Path,
        retries: int = 3,
        backoff_s: float = 0.5,
        client: Callable[[str], TritonServer] = TritonServer,
        observe_timeout_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.fleet = fleet
        self.repo = Path(repo)
        self.retries = retries  # attempts per load, `backoff_s` apart, doubling
        self.backoff_s = backoff_s
        self._client = client
        self._sleep = sleep
        # A live server answers its index in milliseconds; one that hangs (SIGSTOP) must
        # not hold a failover behind it (the health probe's timeout, control/probe.py).
        self.observe_timeout_s = observe_timeout_s

    def _gpu(self, gpu_id: str) -> FleetGpu:
        try:
            return self.fleet.by_id()[gpu_id]
        except KeyError:
            raise ServerError(f"plan gpu {gpu_id!r} is not in the fleet") from None

    def override(self, model: str, gpu: FleetGpu, max_batch: int) -> str:
        """The load_model config override for `model` on `gpu`, from the repository's config."""
        path = self.repo / model / "config.pbtxt"
        if not path.is_file():
            raise RepositoryError(f"{path}: model {model!r} is not in the repository")
        cfg = parse_pbtxt(path)
        cfg.name = model
        if cfg.max_batch_size > 0:
            cfg.max_batch_size = max(cfg.max_batch_size, max_batch)
        if cfg.platform == "ensemble":  # no instances, no warm-up: its steps have them
            return to_override_json(cfg)
        cfg.ClearField("dynamic_batching")
        del cfg.instance_group[:]
        self._add_warmup(cfg, max_batch)
        group = cfg.instance_group.add(count=1)
        if gpu.gpu_type == "cpu":
            group.kind = mc.ModelInstanceGroup.KIND_CPU
        else:
            group.kind = mc.ModelInstanceGroup.KIND_GPU
            group.gpus.append(_gpu_index(gpu.id))
        return to_override_json(cfg)

    @staticmethod
    def _add_warmup(cfg: mc.ModelConfig, max_batch: int) -> None:
        """Triton runs the model on random inputs before it reports READY, so the first
        requests routed to a freshly loaded model do not pay for its first run."""
        del cfg.model_warmup[:]
        if any(d < 0 for t in cfg.input for d in t.dims):
            return  # variable dims: no fixed shape to warm up with
        warm = cfg.model_warmup.add(name="tnx_warmup", count=2)
        warm.batch_size = max(1, max_batch) if cfg.max_batch_size > 0 else 0
        for t in cfg.input:
            spec = warm.inputs[t.name]
            spec.data_type = t.data_type
            spec.dims.extend(t.dims)
            spec.random_data = True

    def observe(self, gpus: Collection[str] | None = None) -> State:
        """Each reachable server's READY models with their live max_batch_size (of the GPUs
        in `gpus` only, when given: a server known to be down is not asked)."""
        return self.read_state(gpus)[0]

    def read_state(self, gpus: Collection[str] | None = None) -> tuple[State, dict[str, str]]:
        """`observe`, and the GPUs whose server did not answer (id → error), read in
        parallel so that one hung server costs one timeout, not one per server."""
        targets = [g for g in self.fleet.gpus if gpus is None or g.id in gpus]
        state: State = {}
        unreachable: dict[str, str] = {}
        if not targets:
            return state, unreachable
        with cf.ThreadPoolExecutor(max_workers=min(8, len(targets))) as pool:
            futures = {pool.submit(self._read, g.server): g for g in targets}
            for fut in cf.as_completed(futures):
                g = futures[fut]
                try:
                    state[g.id] = fut.result()
                except ServerError as err:
                    log.warning("cannot read the state of %s: %s", g.id, err)
                    unreachable[g.id] = str(err)
        return state, unreachable

    def _read(self, address: str) -> dict[str, int]:
        with self._client(address) as server:
            server.query_timeout_s = self.observe_timeout_s
            ready = [m["name"] for m in server.repository_index() if m.get("state") == "READY"]
            return {m: int(server.config(m).get("max_batch_size", 0)) for m in ready}

    def _load(self, gpu_id: str, model: str, max_batch: int) -> None:
        gpu = self._gpu(gpu_id)
        config = self.override(model, gpu, max_batch)

        def warn(state: RetryCallState) -> None:
            err = state.outcome.exception() if state.outcome is not None else None
            log.warning(
                "load %s on %s failed (attempt %d): %s", model, gpu_id, state.attempt_number, err
            )

        for attempt in Retrying(
            stop=stop_after_attempt(self.retries),
            wait=wait_exponential(multiplier=self.backoff_s),
            retry=retry_if_exception_type(ServerError),
            after=warn,
            sleep=self._sleep,
            reraise=True,  # the last attempt's error, not tenacity's RetryError
        ):
            with attempt, self._client(gpu.server) as server:
                server.load(model, config_json=config)
                if not server.is_model_ready(model):
                    raise ServerError(f"{gpu.server}: {model} not ready after load")

    def apply(
        self, plan: Plan, current: State | None = None, gpus: Collection[str] | None = None
    ) -> ApplyResult:
        """Load what `plan` needs (in parallel across servers), wait for ready, and say
        which unloads are due once the routers use the returned plan. `gpus`: the GPUs
        whose state may be read and changed (the live ones); default all."""
        unreachable: dict[str, str] = {}
        if current is None:
            current, unreachable = self.read_state(gpus)
        desired = with_steps(desired_state(plan), self.repo)
        if gpus is not None:
            desired = {g: models for g, models in desired.items() if g in gpus}
        todo = changes(current, desired)
        result = ApplyResult(plan=plan, pending_unloads=todo.unloads, unreachable=unreachable)
        # A server that did not answer its index would not answer a load either: its
        # allocations fail now, instead of after the load's timeout and retries.
        for g, m, _ in todo.loads:
            if g in unreachable:
                result.failed[(g, m)] = f"server did not answer: {unreachable[g]}"
        todo.loads = [t for t in todo.loads if t[0] not in unreachable]
        # Ensembles after their steps (control.ensembles): each wave in parallel.
        steps = {(g, m) for g, m, _ in todo.loads if not ensemble_steps(self.repo, m)}
        for wave in (
            [t for t in todo.loads if (t[0], t[1]) in steps],
            [t for t in todo.loads if (t[0], t[1]) not in steps],
        ):
            if not wave:
                continue
            with cf.ThreadPoolExecutor(max_workers=min(8, len(wave))) as pool:
                futures = {pool.submit(self._load, g, m, b): (g, m) for g, m, b in wave}
                for fut in cf.as_completed(futures):
                    key = futures[fut]
                    try:
                        fut.result()
                        result.loaded.append(key)
                    except (ServerError, RepositoryError) as err:
                        result.failed[key] = str(err)
        result.plan = effective_plan(plan, result.failed)
        return result

    def unload(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Unload (gpu, model) pairs; returns those unloaded (failures are logged)."""
        done = []
        for gpu_id, model in pairs:
            try:
                with self._client(self._gpu(gpu_id).server) as server:
                    server.unload(model)
                done.append((gpu_id, model))
            except ServerError as err:
                log.warning("unload %s on %s failed: %s", model, gpu_id, err)
        return done
