"""The batching policy and the simulator compiled with mypyc, where built and asked for.

Issue 12: the simulator must run the live `router.policy` code at ≥ 200,000 simulated
requests per second; in Python it runs about a quarter of that. `make native` compiles
MODULES, unchanged, with mypyc into `build/native/` — not beside the sources, where an
extension module would shadow its `.py` and a stale build would run in place of an
edited module — with a manifest of the sources' hashes. With `TNX_NATIVE=1` in the
environment, importing the `router` package puts that build first on its search path,
after checking that every compiled source is the same as now; a missing or stale build
stops with one line saying what to run. Without `TNX_NATIVE`, nothing changes.

This module must stay importable without mypy and must not import the modules it
compiles (it runs while `router` is first imported).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import MutableSequence
from pathlib import Path

from tnx.errors import TnxError

ROOT = Path(__file__).resolve().parent.parent
# In import order: each may import those before it. The rest of `router` (the HTTP app,
# the asyncio driver) stays Python: it waits on I/O, not on the interpreter.
MODULES = (
    "router/types.py",
    "router/queues.py",
    "router/latency.py",
    "router/plan_state.py",
    "router/settle_index.py",
    "router/dispatching.py",
    "router/policy.py",
    "router/simulator.py",
)
ENV = "TNX_NATIVE"
DIR_ENV = "TNX_NATIVE_DIR"  # another build directory (tests)
MANIFEST = "manifest.json"


class NativeBuildError(TnxError):
    """TNX_NATIVE asked for the compiled modules and their build is missing or stale."""


def build_dir() -> Path:
    return Path(os.environ.get(DIR_ENV) or ROOT / "build" / "native")


def source_hashes(root: Path = ROOT) -> dict[str, str]:
    return {m: hashlib.sha256((root / m).read_bytes()).hexdigest() for m in MODULES}


def problems(build: Path, root: Path = ROOT) -> list[str]:
    """Why the build in `build` cannot stand for the sources under `root` (empty: it can)."""
    try:
        manifest = json.loads((build / MANIFEST).read_text())
    except (OSError, ValueError):
        return [f"no build in {build}"]
    built = manifest.get("sources", {})
    out = []
    for module, digest in source_hashes(root).items():
        if built.get(module) != digest:
            out.append(f"{module} changed since it was compiled")
        stem = Path(module).with_suffix("")
        if not any((build / stem.parent).glob(f"{stem.name}.*.so")):
            out.append(f"{module}: no extension module in {build / stem.parent}")
    return out


def requested() -> bool:
    return os.environ.get(ENV, "").lower() in ("1", "true", "yes", "on")


def activate(package_path: MutableSequence[str]) -> bool:
    """With TNX_NATIVE set, put the build first on the `router` package's `package_path`
    (its `__path__`); True when it did. Raises NativeBuildError for a missing or stale
    build rather than running the Python modules it was asked to replace."""
    if not requested():
        return False
    build = build_dir()
    wrong = problems(build)
    if wrong:
        raise NativeBuildError(f"{ENV}=1: {wrong[0]}; run `make native` (or unset {ENV})")
    # The extension shims import their shared library as a top-level module.
    sys.path.insert(0, str(build))
    package_path.insert(0, str(build / "router"))
    return True


def active() -> bool:
    """Whether the policy modules running now are the compiled ones."""
    import router.policy

    return not router.policy.__file__.endswith(".py") if router.policy.__file__ else False


def build(out: Path | None = None) -> Path:
    """Compile MODULES into `out` (default build/native) and write the manifest."""
    import tempfile

    from mypyc.build import mypycify
    from setuptools import setup

    out = (out or build_dir()).resolve()
    out.mkdir(parents=True, exist_ok=True)
    hashes = source_hashes()
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path.cwd()
        os.chdir(ROOT)  # mypyc names modules by their paths relative to here
        try:
            setup(
                name="tnx-native",
                # Modules outside MODULES stay Python: mypy reads their types without
                # holding them to the compiled modules' standard.
                ext_modules=mypycify(
                    ["--follow-imports=silent", "--ignore-missing-imports", *MODULES],
                    target_dir=str(Path(tmp) / "c"),
                ),
                script_args=["-q", "build_ext", "--build-lib", str(out), "--build-temp", tmp],
            )
        finally:
            os.chdir(cwd)
    (out / MANIFEST).write_text(json.dumps({"sources": hashes}, indent=1) + "\n")
    return out
