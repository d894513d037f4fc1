"""The part of the cuBLAS and cuBLASLt C APIs that the cuda backend calls, declared for ctypes.

Why ctypes and not CuPy's binding: CuPy's `cupy_backends.cuda.libs.cublas` resets the handle's stream before
every call and refuses any call while that stream is capturing ("calling cuBLAS API during stream capture is
currently unsupported"), so a step whose GEMMs go through it can never become a CUDA graph. The C API itself
has no such rule: a GEMM on a handle whose stream and workspace were set before the capture, with its
algorithm chosen before it, is captured like any kernel. (nvmath-python binds the same C API, but as an
experimental module and one more dependency; these few entry points are all the backend needs.)

Every declaration below is checked against the real headers (cublas_api.h, cublasLt.h) by
tests/test_cuda_blas.py wherever they are installed: a wrong ctypes signature does not fail on the host, it
corrupts the stack of a GPU process. The names are the C names, so the test can ask the C compiler for each.
"""

from __future__ import annotations

import ctypes

from netc.compiler.errors import NetcError

# Every pointer, handle and descriptor is passed as an integer address: the same for the real libraries and
# for the tests' stand-ins, which read and write through the addresses they are given.
POINTER, INT, INT64, UINT64, SIZE = (
    ctypes.c_void_p,
    ctypes.c_int,
    ctypes.c_int64,
    ctypes.c_uint64,
    ctypes.c_size_t,
)

# The constants used, under their C names (cublas_api.h, cublasLt.h, library_types.h).
CUBLAS_STATUS_SUCCESS = 0
CUBLAS_OP_N, CUBLAS_OP_T = 0, 1
CUBLAS_DEFAULT_MATH, CUBLAS_TF32_TENSOR_OP_MATH = 0, 3
CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_COMPUTE_64F = 68, 77, 70
CUDA_R_32F, CUDA_R_64F, CUDA_R_16BF = 0, 1, 14
CUBLASLT_MATMUL_DESC_TRANSA, CUBLASLT_MATMUL_DESC_TRANSB = 3, 4
CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET = 5, 6
CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1
CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES = 5, 6
CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES = 7, 8
CONSTANTS = {name: value for name, value in globals().items() if name.startswith(("CUBLAS", "CUDA_R"))}


class MatmulHeuristicResult(ctypes.Structure):
    """cublasLtMatmulHeuristicResult_t: an algorithm (cublasLtMatmulAlgo_t, 8 opaque words) and its needs."""

    _fields_ = [
        ("algo", ctypes.c_uint64 * 8),
        ("workspaceSize", ctypes.c_size_t),
        ("state", ctypes.c_int),
        ("wavesCount", ctypes.c_float),
        ("reserved", ctypes.c_int * 4),
    ]


# name -> argument types; every function returns a cublasStatus_t.
CUBLASLT_FUNCTIONS = {
    "cublasLtCreate": [POINTER],
    "cublasLtDestroy": [POINTER],
    "cublasLtMatmulDescCreate": [POINTER, INT, INT],
    "cublasLtMatmulDescDestroy": [POINTER],
    "cublasLtMatmulDescSetAttribute": [POINTER, INT, POINTER, SIZE],
    "cublasLtMatmulDescGetAttribute": [POINTER, INT, POINTER, SIZE, POINTER],
    "cublasLtMatrixLayoutCreate": [POINTER, INT, UINT64, UINT64, INT64],
    "cublasLtMatrixLayoutDestroy": [POINTER],
    "cublasLtMatrixLayoutSetAttribute": [POINTER, INT, POINTER, SIZE],
    "cublasLtMatrixLayoutGetAttribute": [POINTER, INT, POINTER, SIZE, POINTER],
    "cublasLtMatmulPreferenceCreate": [POINTER],
    "cublasLtMatmulPreferenceDestroy": [POINTER],
    "cublasLtMatmulPreferenceSetAttribute": [POINTER, INT, POINTER, SIZE],
    # handle, operation, A, B, C, D layouts, preference, requested count, results[], returned count
    "cublasLtMatmulAlgoGetHeuristic": [POINTER] * 7 + [INT, POINTER, POINTER],
    # handle, operation, alpha, A, Adesc, B, Bdesc, beta, C, Cdesc, D, Ddesc, algo, workspace, size, stream
    "cublasLtMatmul": [POINTER] * 14 + [SIZE, POINTER],
}

_GEMM = [POINTER, INT, INT, INT, INT, INT, POINTER, POINTER, INT, POINTER, INT, POINTER, POINTER, INT]
_STRIDED = [POINTER, INT, INT, INT, INT, INT, POINTER]
_STRIDED += [POINTER, INT, INT64, POINTER, INT, INT64, POINTER, POINTER, INT, INT64, INT]
CUBLAS_FUNCTIONS = {
    "cublasCreate_v2": [POINTER],
    "cublasDestroy_v2": [POINTER],
    "cublasSetStream_v2": [POINTER, POINTER],
    "cublasSetWorkspace_v2": [POINTER, POINTER, SIZE],
    "cublasSetMathMode": [POINTER, INT],
    "cublasSgemm_v2": _GEMM,
    "cublasDgemm_v2": _GEMM,
    "cublasSgemmStridedBatched": _STRIDED,
    "cublasDgemmStridedBatched": _STRIDED,
}


class CublasError(NetcError):
    """A cuBLAS call that returned a status other than success."""

    def __init__(self, function: str, status: int):
        super().__init__(f"{function} failed with cuBLAS status {status}")
        self.function, self.status = function, status


class BoundLibrary:
    """The functions of `functions` from a loaded library (a ctypes.CDLL, or a test's stand-in with the same
    names), each called as library.NAME(*args) and raising CublasError on a failed status."""

    def __init__(self, library, functions: dict, name: str):
        self.library, self.name = library, name
        for function, argtypes in functions.items():
            entry = getattr(library, function, None)
            if entry is None:
                raise NetcError(
                    f"{name} has no {function}: it is older than the cuda backend needs (CUDA 11.0+)"
                )
            if isinstance(library, ctypes.CDLL):
                entry.argtypes, entry.restype = argtypes, ctypes.c_int
            setattr(self, function, _checked(function, entry))


def _checked(function: str, entry):
    def call(*args):
        status = entry(*args)
        if status != CUBLAS_STATUS_SUCCESS:
            raise CublasError(function, status)

    call.__name__ = function
    return call
