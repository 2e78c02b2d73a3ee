"""A prefix group in a Triton model repository: the shared prefix stored once, each model's
suffix, and under each original name a Triton ensemble (platform "ensemble", steps prefix →
suffix; Triton's ensemble scheduler) serving the original inputs and outputs.

The models' names carry the group (`model_repo_tools.prefix_names`).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from model_repo_tools.config import Backend, to_pbtxt
from model_repo_tools.onnx_io import read_io
from model_repo_tools.prefix_names import PREFIX, suffix_name
from model_repo_tools.repository import add_model
from tnx.errors import RepositoryError


@dataclass(slots=True)
class Stored:
    """What `add_shared` wrote: per group its prefix and members, and the whole models."""

    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # prefix → models
    whole: list[str] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)


def model_bytes(repo: Path, models: Iterable[str] | None = None) -> int:
    """Bytes of the model files (.onnx, .plan) under `repo` (of `models` only, when given)."""
    repo = Path(repo)
    folders = [repo / m for m in models] if models is not None else [repo]
    return sum(
        p.stat().st_size
        for f in folders
        for p in f.rglob("*")
        if p.is_file() and p.suffix in (".onnx", ".plan")
    )


def add_shared(
    onnx_paths: Sequence[Path],
    repo: Path,
    backend: Backend = "python",
    max_batch: int = 64,
    instance_kind: str = "auto",
) -> Stored:
    """Add the models in `onnx_paths` to `repo`, each group's shared prefix stored once."""
    from exporters.prefix import groups, load_graph
    from exporters.prefix_split import save, split_group, verify_split

    if backend == "tensorrt":
        raise RepositoryError(
            "--share-prefix: splits ONNX models; use --backend python|onnxruntime"
        )
    paths = [Path(p) for p in onnx_paths]
    for p in paths:
        if not p.is_file():
            raise RepositoryError(f"{p}: no such ONNX file")
    graphs = {g.name: g for g in (load_graph(p) for p in paths)}
    stored = Stored()
    kw = {"backend": backend, "max_batch": max_batch, "instance_kind": instance_kind}
    with tempfile.TemporaryDirectory() as tmp:
        for group in groups(graphs.values()):
            if not group.shares:
                (m,) = group.models
                stored.folders.append(add_model(graphs[m].path, repo, **kw))
                stored.whole.append(m)
                continue
            split = split_group(group, graphs)
            verify_split(split, graphs)
            prefix = PREFIX + hashlib.sha256("".join(sorted(group.nodes)).encode()).hexdigest()[:12]
            stored.groups[prefix] = group.models
            path = save(split.prefix, Path(tmp) / f"{prefix}.onnx")
            stored.folders.append(add_model(path, repo, name=prefix, **kw))
            for m, suffix in split.suffixes.items():
                name = suffix_name(prefix, m)
                path = save(suffix, Path(tmp) / f"{name}.onnx")
                stored.folders.append(add_model(path, repo, name=name, **kw))
                stored.folders.append(
                    write_ensemble(repo, m, graphs[m].path, prefix, name, max_batch)
                )
    return stored


def write_ensemble(
    repo: Path, name: str, original: Path, prefix: str, suffix: str, max_batch: int
) -> Path:
    """`<repo>/<name>`: an ensemble with the original model's inputs and outputs, running
    `prefix` then `suffix` (their configs already in `repo`)."""
    from model_repo_tools.config import parse_pbtxt

    inputs, outputs = read_io(original)
    batched = max_batch > 0
    cfg = mc.ModelConfig(name=name, platform="ensemble", max_batch_size=max_batch)
    for t, cls, target in (
        (inputs, mc.ModelInput, cfg.input),
        (outputs, mc.ModelOutput, cfg.output),
    ):
        for x in t:
            dims = x.dims[1:] if batched else x.dims
            target.append(cls(name=x.name, data_type=mc.DataType.Value(x.data_type), dims=dims))
    p_cfg = parse_pbtxt(Path(repo) / prefix / "config.pbtxt")
    s_cfg = parse_pbtxt(Path(repo) / suffix / "config.pbtxt")
    first = cfg.ensemble_scheduling.step.add(model_name=prefix, model_version=-1)
    # The prefix was cut from one member: its inputs match this model's by position.
    for p_in, x in zip(p_cfg.input, inputs, strict=True):
        first.input_map[p_in.name] = x.name
    reads = {i.name for i in s_cfg.input}
    for o in p_cfg.output:
        if o.name in reads:
            first.output_map[o.name] = o.name
    second = cfg.ensemble_scheduling.step.add(model_name=suffix, model_version=-1)
    for i in s_cfg.input:
        second.input_map[i.name] = i.name
    for o in s_cfg.output:
        second.output_map[o.name] = o.name
    folder = Path(repo) / name
    version = folder / "1"
    version.mkdir(parents=True, exist_ok=True)  # Triton wants a version folder, even empty
    for f in version.iterdir():  # a whole model stored here before
        if f.is_file():
            f.unlink()
    (folder / "config.pbtxt").write_text(to_pbtxt(cfg))
    return folder
