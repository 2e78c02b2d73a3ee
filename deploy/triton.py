"""Finding and launching a `tritonserver` binary: the one bundled in `nvidia-pytriton`, or an NGC install.

The wheel ships Triton 2.51 with the Python backend. The backend needs the
`triton_python_backend_stub` built for this interpreter copied into
`backends/python/`; the server needs the wheel's own shared libraries and the
interpreter's LIBDIR on LD_LIBRARY_PATH; and the stub runs the first `python3`
on PATH, so this environment's `bin/` goes first so that Python-backend models
import onnxruntime and numpy from it (DESIGN.md, "Embedded default").
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from tnx.errors import MissingDependencyError


@dataclass(frozen=True, slots=True)
class TritonInstall:
    binary: Path
    backend_dir: Path | None
    lib_dirs: tuple[Path, ...]

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        libs = [str(p) for p in self.lib_dirs]
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        # Models of the Python backend must not grab every core of a shared machine.
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def args(self) -> list[str]:
        args = [str(self.binary)]
        if self.backend_dir is not None:
            args.append(f"--backend-directory={self.backend_dir}")
        return args


def _bundled_root() -> Path | None:
    # find_spec, not import: the tritonserver files are all we need, and importing
    # pytriton itself pulls in its own dependencies, which need not be installed.
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    return root if (root / "bin" / "tritonserver").exists() else None


def _install_stub(root: Path) -> None:
    """Copy the stub for this Python into backends/python/ once (idempotent)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    src = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    dst = root / "backends" / "python" / "triton_python_backend_stub"
    if not src.exists():
        raise MissingDependencyError(
            f"nvidia-pytriton has no Python backend stub for Python {version} ({src.parent})"
        )
    if not dst.exists() or dst.stat().st_size != src.stat().st_size:
        tmp = dst.with_suffix(".tmp")
        shutil.copy2(src, tmp)
        tmp.replace(dst)
    dst.chmod(0o755)


def find_tritonserver(explicit: str | os.PathLike[str] | None = None) -> TritonInstall:
    """The binary to run: `explicit`, else $TRITONSERVER, else the one nvidia-pytriton bundles."""
    chosen = explicit or os.environ.get("TRITONSERVER")
    if chosen:
        path = Path(chosen)
        if not path.is_file() or not os.access(path, os.X_OK):
            raise MissingDependencyError(f"tritonserver binary not found or not executable: {path}")
        # An NGC install finds its backends at /opt/tritonserver/backends by itself.
        return TritonInstall(binary=path, backend_dir=None, lib_dirs=())
    root = _bundled_root()
    if root is None:
        raise MissingDependencyError(
            "no tritonserver: install nvidia-pytriton, or pass --tritonserver PATH / set TRITONSERVER"
        )
    _install_stub(root)
    libs_dir = root.parent.parent / "nvidia_pytriton.libs"
    lib_dirs = tuple(
        p for p in (libs_dir, Path(sysconfig.get_config_var("LIBDIR") or "")) if p.is_dir()
    )
    return TritonInstall(
        binary=root / "bin" / "tritonserver", backend_dir=root / "backends", lib_dirs=lib_dirs
    )
