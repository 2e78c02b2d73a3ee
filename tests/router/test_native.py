"""router.native: the compiled policy is used only when built from the sources as they are,
and acts as the Python one, action for action."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from router import native

ROOT = Path(__file__).resolve().parents[2]

# router.testing.eventful_run under the three drop modes. Printed: which modules ran, and
# every dispatch and outcome.
SCENARIO = """
import json
from router.native import active
from router.testing import eventful_run
from router.types import Answered

runs = {}
for mode in ("early", "lazy", "none"):
    res = eventful_run(mode=mode)
    runs[mode] = {
        "dispatches": [[t, d.gpu, [r.id for r in d.requests]] for t, d in res.dispatches],
        "outcomes": [
            [o.request.id, o.finished] if isinstance(o, Answered) else [o.request.id, o.reason]
            for o in res.outcomes
        ],
    }
print(json.dumps({"active": active(), "runs": runs}))
"""


def _run(native_on: bool, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, native.ENV: "1" if native_on else "0", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-c", SCENARIO], cwd=ROOT, env=env, capture_output=True, text=True
    )


def _fake_build(tmp_path: Path, hashes: dict[str, str], with_modules: bool) -> Path:
    build = tmp_path / "native"
    (build / "router").mkdir(parents=True)
    (build / native.MANIFEST).write_text(json.dumps({"sources": hashes}))
    if with_modules:
        for m in native.MODULES:
            (build / "router" / f"{Path(m).stem}.cpython-311-x86_64-linux-gnu.so").touch()
    return build


def test_a_missing_or_stale_build_is_refused_with_what_to_run(tmp_path: Path) -> None:
    assert native.problems(tmp_path / "none") == [f"no build in {tmp_path / 'none'}"]
    hashes = native.source_hashes()
    assert native.problems(_fake_build(tmp_path / "ok", hashes, with_modules=True)) == []
    stale = dict(hashes, **{"router/policy.py": "0" * 64})
    assert native.problems(_fake_build(tmp_path / "stale", stale, with_modules=True)) == [
        "router/policy.py changed since it was compiled"
    ]
    bare = native.problems(_fake_build(tmp_path / "bare", hashes, with_modules=False))
    assert len(bare) == len(native.MODULES) and "no extension module" in bare[0]
    # Asked for, a stale build stops the import of `router` instead of running Python.
    r = _run(True, {native.DIR_ENV: str(tmp_path / "stale" / "native")})
    assert r.returncode != 0
    assert "router/policy.py changed since it was compiled; run `make native`" in r.stderr


def test_the_tnx_command_says_so_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, native.ENV: "1", native.DIR_ENV: str(tmp_path / "none")}
    r = subprocess.run(
        [sys.executable, "-c", "from deploy.cli import main; main()", "simulate", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (
        f"tnx: error: TNX_NATIVE=1: no build in {tmp_path / 'none'}; "
        "run `make native` (or unset TNX_NATIVE)"
    )


@pytest.mark.skipif(
    bool(native.problems(native.build_dir())), reason="no native build of these sources"
)
def test_the_compiled_policy_acts_as_the_python_one() -> None:
    # Runs where `make native` built the sources as they are (`make test-native`).
    python, compiled = _run(False), _run(True)
    assert python.returncode == 0, python.stderr
    assert compiled.returncode == 0, compiled.stderr
    a, b = json.loads(python.stdout), json.loads(compiled.stdout)
    assert a["active"] is False and b["active"] is True
    assert a["runs"] == b["runs"]
    assert sum(len(r["dispatches"]) for r in a["runs"].values()) > 100
