"""Every `tnx` command answers a mistyped option with a usage line and exit 2, no traceback."""

from __future__ import annotations

import concurrent.futures as cf
import subprocess
import sys

import typer


def _commands() -> list[list[str]]:
    from deploy.cli import _mount, app

    _mount()
    out: list[list[str]] = []

    def walk(cmd, path: list[str]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, [*path, name])
        else:
            out.append(path)

    walk(typer.main.get_command(app), [])
    return out


def test_every_command_rejects_a_bogus_option_with_usage_and_exit_2() -> None:
    commands = _commands()
    assert ["plan"] in commands and ["router", "serve"] in commands and len(commands) > 10

    def run(path: list[str]) -> tuple[list[str], subprocess.CompletedProcess]:
        cmd = [sys.executable, "-c", "from deploy.cli import main; main()", *path, "--bogus"]
        return path, subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    with cf.ThreadPoolExecutor(2) as pool:
        for path, r in pool.map(run, commands):
            assert r.returncode == 2, (path, r.stderr[-500:])
            assert "No such option: --bogus" in r.stderr, (path, r.stderr[-500:])
            assert "Traceback" not in r.stderr, (path, r.stderr[-500:])
