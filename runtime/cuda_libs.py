"""Finding the cuBLAS and cuBLASLt libraries that CuPy uses, to call them through ctypes (cuda_blas_api.py).

The copy CuPy has already loaded comes first, so the process holds one cuBLAS of the CUDA version CuPy was
built for. Then the places it may have come from: NVIDIA's pip wheels (nvidia-cublas, laid out as
nvidia/cu13/lib or nvidia/cublas/lib), cuda-pathfinder (which CuPy 14 loads its libraries with), the CUDA
toolkit ($CUDA_PATH, $CUDA_HOME, /usr/local/cuda) and the dynamic loader's own search path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

from netc.compiler.errors import NetcError


def load_cuda_library(stem: str, major: int) -> ctypes.CDLL:
    """lib{stem}.so.{major} (stem "cublas" or "cublasLt"), loaded; a NetcError naming every place looked in
    and what to install when it is nowhere."""
    soname = f"lib{stem}.so.{major}"
    tried = []
    for place, path in candidate_paths(stem, major):
        try:
            return ctypes.CDLL(path)
        except OSError as error:
            tried.append(f"{place} ({path}: {error})" if os.path.exists(str(path)) else place)
    raise NetcError(
        f"the cuda backend needs {soname} (cuBLAS{'Lt' if stem.endswith('Lt') else ''} for CUDA {major}) and "
        f"found it nowhere; looked in: {'; '.join(dict.fromkeys(tried))}",
        hint=f"pip install nvidia-cublas-cu{major}" if major < 13 else "pip install nvidia-cublas",
    )


def candidate_paths(stem: str, major: int):
    """(where, path) for every place lib{stem}.so.{major} may be, the most trusted first."""
    soname = f"lib{stem}.so.{major}"
    for path in loaded_paths(stem):
        yield "the copy this process has loaded", path
    for root in _nvidia_wheel_roots():
        for folder in (f"cu{major}/lib", "cublas/lib"):
            yield f"the nvidia-cublas wheel ({root})", str(Path(root) / folder / soname)
    pathfinder = _pathfinder_path(stem)
    if pathfinder:
        yield "cuda-pathfinder", pathfinder
    for variable in ("CUDA_PATH", "CUDA_HOME"):
        if os.environ.get(variable):
            for folder in ("lib64", "lib", "targets/x86_64-linux/lib"):
                yield f"${variable}", str(Path(os.environ[variable]) / folder / soname)
    yield "/usr/local/cuda", f"/usr/local/cuda/lib64/{soname}"
    yield "the dynamic loader's path (LD_LIBRARY_PATH, ldconfig)", soname
    found = ctypes.util.find_library(stem)
    if found and found.startswith(soname):
        yield "ctypes.util.find_library", found


def loaded_paths(stem: str, maps: str = "/proc/self/maps") -> list:
    """Paths of lib{stem}.so* mapped into this process (CuPy's cuBLAS, and the cuBLASLt it links)."""
    try:
        lines = Path(maps).read_text().splitlines()
    except OSError:
        return []
    fields = (line.split(maxsplit=5) for line in lines)
    paths = (parts[5] for parts in fields if len(parts) == 6)  # address, perms, offset, device, inode, path
    return list(dict.fromkeys(p for p in paths if Path(p).name.startswith(f"lib{stem}.so")))


def _nvidia_wheel_roots() -> list:
    try:
        import nvidia  # a namespace package of NVIDIA's library wheels
    except ImportError:
        return []
    return list(getattr(nvidia, "__path__", []))


def _pathfinder_path(stem: str) -> str | None:
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib
    except ImportError:
        return None
    try:
        return load_nvidia_dynamic_lib(stem).abs_path
    except Exception:  # its own DynamicLibNotFoundError, or anything else it raises: the next place will do
        return None
