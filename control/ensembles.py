"""What a plan's ensembles need loaded beside them (Triton's ensemble scheduler).

A model stored split (`model_repo_tools.shared_prefix`: a shared prefix, a suffix, and an
ensemble of the two under the model's name) runs on a server only with its steps loaded
there. Triton's explicit mode would load missing steps with their repository configs, and
the actuator would then see them as unplanned and unload them; so the actuator loads the
steps itself, first, each at least at the batch it runs: a suffix at its model's batch,
a prefix at the sum of the batches of the models that share it on the GPU (the router's
prefix batch holds them all), and unloads them only with their last ensemble.
"""

from __future__ import annotations

from pathlib import Path

from model_repo_tools.config import parse_pbtxt

State = dict[str, dict[str, int]]  # gpu id → {model: max batch}, as control.actuator's


def ensemble_steps(repo: Path, model: str) -> list[str]:
    """The models an ensemble's steps run, in order; [] for a model that is not one."""
    path = Path(repo) / model / "config.pbtxt"
    if not path.is_file():
        return []
    cfg = parse_pbtxt(path)
    if cfg.platform != "ensemble":
        return []
    return [s.model_name for s in cfg.ensemble_scheduling.step]


def with_steps(desired: State, repo: Path) -> State:
    """`desired` plus each ensemble's steps: the last step at the ensemble's batch, the
    earlier ones (a shared prefix) at the sum over the ensembles that run them."""
    out: State = {}
    for gpu, models in desired.items():
        need = dict(models)
        shared: dict[str, int] = {}
        for model, batch in models.items():
            steps = ensemble_steps(repo, model)
            for step in steps[:-1]:
                shared[step] = shared.get(step, 0) + batch
            for step in steps[-1:]:
                need[step] = max(need.get(step, 0), batch)
        for step, batch in shared.items():
            need[step] = max(need.get(step, 0), batch)
        out[gpu] = need
    return out
