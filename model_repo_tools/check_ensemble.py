"""Validation of a Triton ensemble's configuration (platform "ensemble", Triton's ensemble
scheduler): every step names a model of the repository, maps only that model's inputs and
outputs, reads only tensors the ensemble has by then, and every ensemble output is made."""

from __future__ import annotations

from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from model_repo_tools.config import parse_pbtxt
from tnx.errors import RepositoryError


def check_ensemble(folder: Path, cfg: mc.ModelConfig) -> list[str]:
    """Problems of the ensemble in `folder` (its repository is the parent folder)."""
    problems: list[str] = []
    steps = cfg.ensemble_scheduling.step
    if not steps:
        return ["ensemble has no ensemble_scheduling steps"]
    if not any(p.is_dir() and p.name.isdigit() for p in folder.iterdir()):
        problems.append("no version folder (e.g. 1/); an ensemble needs an empty one")
    have = {t.name for t in cfg.input}
    for k, step in enumerate(steps, 1):
        where = f"step {k} ({step.model_name})"
        path = folder.parent / step.model_name / "config.pbtxt"
        if not path.is_file():
            problems.append(f"{where}: model {step.model_name!r} is not in the repository")
            continue
        try:
            sub = parse_pbtxt(path)
        except RepositoryError as err:
            problems.append(f"{where}: {err}")
            continue
        ins, outs = {t.name for t in sub.input}, {t.name for t in sub.output}
        for model_in, tensor in step.input_map.items():
            if model_in not in ins:
                problems.append(f"{where}: input_map names {model_in!r}, not an input of it")
            if tensor not in have:
                problems.append(f"{where}: reads {tensor!r} before any step makes it")
        missing = ins - set(step.input_map)
        if missing:
            problems.append(f"{where}: inputs {sorted(missing)} are not mapped")
        for model_out, tensor in step.output_map.items():
            if model_out not in outs:
                problems.append(f"{where}: output_map names {model_out!r}, not an output of it")
            have.add(tensor)
        if cfg.max_batch_size > 0 and sub.max_batch_size < cfg.max_batch_size:
            problems.append(
                f"{where}: max_batch_size {sub.max_batch_size} below the ensemble's "
                f"{cfg.max_batch_size}"
            )
    for t in cfg.output:
        if t.name not in have:
            problems.append(f"output {t.name!r} is made by no step")
    return problems
