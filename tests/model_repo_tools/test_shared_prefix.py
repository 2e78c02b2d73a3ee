"""Storing a prefix group (model_repo_tools.shared_prefix) and checking ensembles
(model_repo_tools.check_ensemble), on small hand-built ONNX models; what the actuator
loads beside an ensemble (control.ensembles). No server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx

from control.ensembles import ensemble_steps, with_steps
from model_repo_tools.check import check_repository
from model_repo_tools.config import parse_pbtxt, to_pbtxt
from model_repo_tools.prefix_names import parts
from model_repo_tools.shared_prefix import add_shared, model_bytes
from tests.exporters.test_prefix import RNG, W_CONV, _mlp, _model


def _files(tmp_path: Path) -> list[Path]:
    models = {
        "a": _model("a", W_CONV, RNG.standard_normal((10, 8)).astype(np.float32)),
        "b": _model("b", W_CONV.copy(), RNG.standard_normal((5, 8)).astype(np.float32)),
        "mlp": _mlp(),
    }
    out = []
    for name, m in models.items():
        onnx.save(m, str(tmp_path / f"{name}.onnx"))
        out.append(tmp_path / f"{name}.onnx")
    return out


def test_the_prefix_is_stored_once_and_each_name_is_an_ensemble(tmp_path: Path) -> None:
    files = _files(tmp_path)
    repo = tmp_path / "repo"
    stored = add_shared(files, repo, max_batch=16)
    (prefix,) = stored.groups
    assert stored.groups[prefix] == ("a", "b") and stored.whole == ["mlp"]
    assert parts(p.name for p in repo.iterdir()) == {
        "a": (prefix, f"{prefix}__a"),
        "b": (prefix, f"{prefix}__b"),
    }
    assert model_bytes(repo) < sum(f.stat().st_size for f in files)
    cfg = parse_pbtxt(repo / "a" / "config.pbtxt")
    assert cfg.platform == "ensemble" and [t.name for t in cfg.input] == ["input"]
    assert [s.model_name for s in cfg.ensemble_scheduling.step] == [prefix, f"{prefix}__a"]
    assert ensemble_steps(repo, "a") == [prefix, f"{prefix}__a"]
    assert ensemble_steps(repo, "mlp") == []
    assert check_repository(repo) == []
    # Storing again gives the same repository.
    before = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    add_shared(files, repo, max_batch=16)
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before


def test_check_names_what_is_wrong_with_an_ensemble(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (prefix,) = add_shared(_files(tmp_path), repo, max_batch=16).groups
    cfg = parse_pbtxt(repo / "b" / "config.pbtxt")
    cfg.ensemble_scheduling.step[1].model_name = "nope"
    cfg.ensemble_scheduling.step[0].input_map["not_an_input"] = "input"
    (repo / "b" / "config.pbtxt").write_text(to_pbtxt(cfg))
    problems = [str(p) for p in check_repository(repo)]
    assert f"b: step 1 ({prefix}): input_map names 'not_an_input', not an input of it" in problems
    assert "b: step 2 (nope): model 'nope' is not in the repository" in problems
    assert "b: output 'output' is made by no step" in problems


def test_the_actuator_loads_the_steps_first_and_keeps_them(tmp_path: Path) -> None:
    from control.actuator import Actuator, changes
    from model_repo_tools.fleet import Fleet

    repo = tmp_path / "repo"
    (prefix,) = add_shared(_files(tmp_path), repo, max_batch=16).groups
    desired = with_steps({"g0": {"a": 4, "b": 8, "mlp": 2}}, repo)
    # A prefix runs the batches of both its models at once; a suffix its model's.
    assert desired == {
        "g0": {"a": 4, "b": 8, "mlp": 2, prefix: 12, f"{prefix}__a": 4, f"{prefix}__b": 8}
    }
    assert changes({"g0": {**desired["g0"]}}, desired).unloads == []
    fleet = Fleet.model_validate(
        {"gpus": [{"id": "g0", "gpu_type": "cpu", "memory_bytes": 1, "server": "x:1"}]}
    )
    override = json.loads(Actuator(fleet, repo).override("a", fleet.gpus[0], 4))
    assert override["platform"] == "ensemble" and "instance_group" not in override
