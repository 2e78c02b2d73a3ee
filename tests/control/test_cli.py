"""`tnx plan` end to end through the real entry point: summaries, unplaced reasons,
and one-line errors (no traceback) for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from control.cli import DEFAULT_PROFILES
from control.types import Plan, Workload
from control.validate import validate_plan
from model_repo_tools.profiles import ProfileSet

ENTRY = [sys.executable, "-c", "from deploy.cli import main; main()"]


def tnx(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*ENTRY, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    traffic = [
        {"id": "det", "model": "inception_v3"},
        {"id": "car", "model": "resnet50", "after": "det", "fanout": 2.5},
    ]
    wl = {
        "sessions": [
            {"id": "cams", "model": "resnet50", "slo_ms": 50, "rate": 40000},
            {"id": "chat", "model": "bert_base_seq128", "slo_ms": 100, "rate": 900},
            {"id": "ghost", "model": "no-such-model", "slo_ms": 100, "rate": 5},
            {"id": "rush", "model": "vgg16", "slo_ms": 0.5, "rate": 5},
        ],
        "queries": [{"id": "traffic", "slo_ms": 400, "rate": 20, "stages": traffic}],
    }
    (tmp_path / "workload.json").write_text(json.dumps(wl))
    fleet = {
        "gpus": [
            {"id": "t0/0", "gpu_type": "h200", "memory_bytes": 141000000000, "server": "a:8001"}
        ]
    }
    (tmp_path / "fleet.json").write_text(json.dumps(fleet))
    return tmp_path


def plan_args(d: Path, *extra: str) -> list[str]:
    return ["plan", "--profiles", str(DEFAULT_PROFILES), "--workload", str(d / "workload.json"),
            "--out", str(d / "plan.json"), *extra]  # fmt: skip


def test_plan_on_a_pool_writes_a_valid_plan(files):
    r = tnx(*plan_args(files, "--gpu-type", "h200", "--gpu-memory", "141000000000"), cwd=files)
    assert r.returncode == 0, r.stderr
    assert "GPUs (tnx), lower bound" in r.stdout
    plan = Plan.load(files / "plan.json")
    reasons = {u.session: u.reason for u in plan.unplaced}
    assert "no profile" in reasons["ghost"]
    assert "SLO" in reasons["rush"]
    placed = {a.session for g in plan.gpus for a in g.allocations}
    assert {"cams", "chat", "traffic/det", "traffic/car"} <= placed
    # The query's structure travels in the plan, with the budgets its stages were planned at.
    (q,) = plan.queries
    slo = {a.session: a.slo_ms for g in plan.gpus for a in g.allocations}
    assert [(st.session, st.budget_ms) for st in q.stages] == [
        ("traffic/det", slo["traffic/det"]),
        ("traffic/car", slo["traffic/car"]),
    ]
    from control.problem import pool
    from control.scheduler import workload_sessions

    ps = ProfileSet.load(DEFAULT_PROFILES)
    ss = workload_sessions(Workload.load(files / "workload.json"), ps.curves(), pool("h200"))
    assert validate_plan(plan, ss, ps.curves(), default_memory=141e9) == []


def test_plan_on_a_small_fleet_lists_what_does_not_fit(files):
    r = tnx(*plan_args(files, "--fleet", str(files / "fleet.json")), cwd=files)
    assert r.returncode == 0, r.stderr
    plan = Plan.load(files / "plan.json")
    assert [g.gpu for g in plan.gpus] == ["t0/0"]
    assert any("fleet full" in u.reason for u in plan.unplaced)
    assert "unplaced" in r.stdout


def test_previous_plan_reports_moves(files):
    base = plan_args(files, "--gpu-type", "h200", "--gpu-memory", "141000000000")
    assert tnx(*base, cwd=files).returncode == 0
    (files / "prev.json").write_text((files / "plan.json").read_text())
    r = tnx(*base, "--previous", str(files / "prev.json"), cwd=files)
    assert r.returncode == 0, r.stderr
    assert "moves: 0 loads, 0 unloads" in r.stdout


def one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr + r.stdout
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ("{not json", ["workload.json", "not JSON"]),
        ('{"sessions": [{"id": "a", "model": "m", "slo_ms": 5}]}', ["workload.json", "rate"]),
        ('{"sessions": [{"id": "a", "model": "m", "slo_ms": -1, "rate": 1}]}', ["slo_ms"]),
    ],
)
def test_malformed_workload_is_one_line(files, content, needles):
    (files / "workload.json").write_text(content)
    r = tnx(*plan_args(files, "--gpu-type", "h200"), cwd=files)
    one_line_error(r, "tnx: error:", *needles)


def test_bad_flags_are_one_line(files):
    one_line_error(tnx(*plan_args(files), cwd=files), "--fleet")
    both = plan_args(files, "--gpu-type", "h200", "--fleet", str(files / "fleet.json"))
    one_line_error(tnx(*both, cwd=files), "--fleet")
    bad = plan_args(files, "--gpu-type", "h200", "--policy", "magic")
    one_line_error(tnx(*bad, cwd=files), "--policy")
    missing = plan_args(files, "--fleet", str(files / "nope.json"))
    one_line_error(tnx(*missing, cwd=files), "nope.json")
    (files / "fleet.json").write_text('{"gpus": [{"id": "x", "gpu_type": "h200"}]}')
    one_line_error(tnx(*plan_args(files, "--fleet", str(files / "fleet.json")), cwd=files),
                   "fleet.json", "memory_bytes")  # fmt: skip


def test_bench_plan_is_mounted_from_bench_and_prints_its_table(tmp_path):
    # The harness lives in bench/ (bench/plan.py); `tnx bench plan` still runs it.
    r = tnx("bench", "plan", "--sizes", "5", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("| 5 |")]
    assert len(rows) == 1 and rows[0].endswith("| yes |"), r.stdout
    bad = tnx("bench", "plan", "--sizes", "x", cwd=tmp_path)
    assert bad.returncode == 1 and "--sizes" in bad.stderr and "Traceback" not in bad.stderr


def test_move_budget_flag(files):
    base = plan_args(files, "--gpu-type", "h200", "--gpu-memory", "141000000000")
    assert tnx(*base, cwd=files).returncode == 0
    (files / "prev.json").write_text((files / "plan.json").read_text())
    r = tnx(*base, "--previous", str(files / "prev.json"), "--max-moves", "0", cwd=files)
    assert r.returncode == 0, r.stderr
    assert "moves: 0 loads, 0 unloads" in r.stdout and "budget of 0" in r.stdout
    one_line_error(tnx(*base, "--max-moves", "3", cwd=files), "--max-moves")


def test_bench_scale_prints_its_table_and_the_ratios(tmp_path):
    r = tnx("bench", "scale", "--sizes", "40,80", "--repeats", "1", "--no-scratch", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith(("| 40 |", "| 80 |"))]
    assert len(rows) == 2 and all(row.endswith("| yes |") for row in rows), r.stdout
    r = tnx("bench", "scale", "--sizes", "40,80", "--ratios", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("| round | 40 (s) | 80 (s) | 80 / 40 |"), r.stdout
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["1", "2", "median"]
    assert "re-plan / fresh" in lines[0] and "(max " in lines[-1]
