"""One `nvidia-smi --query-…` call, or None where there is no nvidia-smi or it fails."""

from __future__ import annotations

import shutil
import subprocess


def query(*args: str, timeout_s: float = 10.0) -> str | None:
    """`nvidia-smi ARGS --format=csv,noheader,nounits`'s output."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        return subprocess.run(
            ["nvidia-smi", *args, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return None
