"""cuBLASLt's and cuBLAS's C APIs over host memory, called as runtime/cuda_gemm.py calls the real libraries
through ctypes: pointers and handles as addresses, out-parameters written through them, a status returned.

They refuse what the real libraries refuse: an attribute of the wrong size, a leading dimension smaller than
the rows, an operation whose shapes do not chain, a matmul with an algorithm that was not chosen for its
layouts or for pointers this misaligned, or without the workspace it asked for; a classic handle captured
without its own workspace. Work goes to the fake streams of cuda_fakes.py, so a captured GEMM runs at replay.
"""

from __future__ import annotations

import ctypes
import itertools

import numpy as np
from cuda_fakes import (
    STATUS_EXECUTION_FAILED,
    STATUS_INVALID_VALUE,
    STATUS_NOT_INITIALIZED,
    STATUS_NOT_SUPPORTED,
    FakeStream,
)
from netc.runtime import cuda_blas_api as api

DTYPES = {api.CUDA_R_32F: np.float32, api.CUDA_R_64F: np.float64, api.CUDA_R_16BF: np.uint16}  # bf16: its bits
# The combinations of cublasLtMatmul's table of supported data types that the fake computes: (compute type,
# scale type, A and B type) -> the C and D types allowed. Anything else is refused, as the real library does.
SUPPORTED_TYPES = {
    (api.CUBLAS_COMPUTE_32F, api.CUDA_R_32F, api.CUDA_R_32F): (api.CUDA_R_32F,),
    (api.CUBLAS_COMPUTE_32F_FAST_TF32, api.CUDA_R_32F, api.CUDA_R_32F): (api.CUDA_R_32F,),
    (api.CUBLAS_COMPUTE_64F, api.CUDA_R_64F, api.CUDA_R_64F): (api.CUDA_R_64F,),
    (api.CUBLAS_COMPUTE_32F, api.CUDA_R_32F, api.CUDA_R_16BF): (api.CUDA_R_16BF, api.CUDA_R_32F),
}
MATMUL_ATTRIBUTES = {
    api.CUBLASLT_MATMUL_DESC_TRANSA: ("transa", 4),
    api.CUBLASLT_MATMUL_DESC_TRANSB: ("transb", 4),
}
LAYOUT_ATTRIBUTES = {
    api.CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT: ("batch", 4),
    api.CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET: ("stride", 8),
}
PREFERENCE_ATTRIBUTES = {
    api.CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES: ("max_workspace", 8),
    api.CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES: ("align_a", 4),
    api.CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES: ("align_b", 4),
    api.CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES: ("align_c", 4),
    api.CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: ("align_d", 4),
}
ALGORITHM_WORKSPACE = 1 << 20  # what the fake heuristic's algorithms ask for


def _value(x) -> int:
    return x.value if isinstance(x, ctypes.c_void_p) else int(x)


def _write_pointer(address, value: int) -> None:
    ctypes.c_void_p.from_address(_value(address)).value = value


def round_to_tf32(x: np.ndarray) -> np.ndarray:
    """float32 rounded to TensorFloat-32's 10-bit mantissa (to nearest, ties to even), as tensor cores read
    it."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    rounded = (bits + 0xFFF + ((bits >> 13) & 1)) & np.uint32(0xFFFFE000)
    return rounded.view(np.float32)


def widen_bf16(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bits as the float32 numbers they are (exactly)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def narrow_bf16(x: np.ndarray) -> np.ndarray:
    """float32 numbers rounded to the nearest bfloat16 (ties to even), as bits: as a GEMM's epilogue stores."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    nan = (bits & 0x7FFFFFFF) > 0x7F800000
    return np.where(nan, (bits >> 16) | 0x40, (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def column_major(address: int, dtype, rows: int, cols: int, ld: int, transposed: bool) -> np.ndarray:
    """The stored rows x cols column-major matrix at `address` (a writable view), transposed if asked."""
    item = np.dtype(dtype).itemsize
    buffer = (ctypes.c_char * (item * (ld * (cols - 1) + rows))).from_address(address)
    flat = np.frombuffer(buffer, dtype)
    matrix = np.lib.stride_tricks.as_strided(flat, (rows, cols), (item, ld * item))
    return matrix.T if transposed else matrix


class _Objects:
    def __init__(self):
        self.objects, self._ids = {}, itertools.count(0x7000, 0x10)

    def new(self, out_address, **fields) -> int:
        handle = next(self._ids)
        self.objects[handle] = fields
        _write_pointer(out_address, handle)
        return 0

    def get(self, handle) -> dict | None:
        return self.objects.get(_value(handle))


def _set(obj: dict | None, table: dict, attribute: int, buffer: int, size: int) -> int:
    if obj is None or attribute not in table or table[attribute][1] != size:
        return STATUS_INVALID_VALUE
    obj[table[attribute][0]] = int.from_bytes(ctypes.string_at(_value(buffer), size), "little", signed=True)
    return 0


def _get(obj: dict | None, table: dict, attribute: int, buffer: int, size: int, written: int) -> int:
    if obj is None or attribute not in table or table[attribute][1] != size:
        return STATUS_INVALID_VALUE
    name, width = table[attribute]
    ctypes.memmove(_value(buffer), int(obj.get(name, 0)).to_bytes(width, "little", signed=True), width)
    if _value(written):
        ctypes.c_size_t.from_address(_value(written)).value = width
    return 0


class FakeCublasLt(_Objects):
    """libcublasLt's functions of cuda_blas_api.CUBLASLT_FUNCTIONS."""

    def __init__(self):
        super().__init__()
        self.matmuls = 0  # cublasLtMatmul calls that ran (at once, or at a replay)
        self.algorithms = {}  # what the heuristic chose, by the number in the algorithm's opaque words

    def cublasLtCreate(self, out):
        return self.new(out, kind="handle")

    def cublasLtDestroy(self, handle):
        return 0 if self.objects.pop(_value(handle), None) else STATUS_NOT_INITIALIZED

    def cublasLtMatmulDescCreate(self, out, compute, scale):
        return self.new(out, kind="operation", compute=compute, scale=scale, transa=0, transb=0)

    def cublasLtMatrixLayoutCreate(self, out, dtype, rows, cols, ld):
        if dtype not in DTYPES or ld < max(1, rows):
            return STATUS_INVALID_VALUE
        return self.new(out, kind="layout", dtype=dtype, rows=rows, cols=cols, ld=ld, batch=1, stride=0)

    def cublasLtMatmulPreferenceCreate(self, out):
        return self.new(
            out, kind="preference", max_workspace=0, align_a=256, align_b=256, align_c=256, align_d=256
        )

    def _destroy(self, handle):
        return 0 if self.objects.pop(_value(handle), None) else STATUS_INVALID_VALUE

    cublasLtMatmulDescDestroy = cublasLtMatrixLayoutDestroy = cublasLtMatmulPreferenceDestroy = _destroy

    def cublasLtMatmulDescSetAttribute(self, desc, attribute, buffer, size):
        return _set(self.get(desc), MATMUL_ATTRIBUTES, attribute, buffer, size)

    def cublasLtMatmulDescGetAttribute(self, desc, attribute, buffer, size, written):
        return _get(self.get(desc), MATMUL_ATTRIBUTES, attribute, buffer, size, written)

    def cublasLtMatrixLayoutSetAttribute(self, layout, attribute, buffer, size):
        return _set(self.get(layout), LAYOUT_ATTRIBUTES, attribute, buffer, size)

    def cublasLtMatrixLayoutGetAttribute(self, layout, attribute, buffer, size, written):
        return _get(self.get(layout), LAYOUT_ATTRIBUTES, attribute, buffer, size, written)

    def cublasLtMatmulPreferenceSetAttribute(self, preference, attribute, buffer, size):
        return _set(self.get(preference), PREFERENCE_ATTRIBUTES, attribute, buffer, size)

    def _problem(self, desc, a, b, c, d):
        """(operation, layouts) if the shapes chain (op(A): m x k, op(B): k x n, C and D: m x n), or None."""
        operation, layouts = self.get(desc), [self.get(x) for x in (a, b, c, d)]
        if operation is None or None in layouts:
            return None
        la, lb, lc, ld = layouts
        m, k = (la["cols"], la["rows"]) if operation["transa"] else (la["rows"], la["cols"])
        k2, n = (lb["cols"], lb["rows"]) if operation["transb"] else (lb["rows"], lb["cols"])
        batches = {x["batch"] for x in layouts}
        if k != k2 or (lc["rows"], lc["cols"]) != (m, n) or lc != ld or len(batches) != 1:
            return None
        outputs = SUPPORTED_TYPES.get((operation["compute"], operation["scale"], la["dtype"]), ())
        if lb["dtype"] != la["dtype"] or lc["dtype"] not in outputs:
            return None  # a combination of types cuBLASLt does not compute
        return operation, layouts

    def cublasLtMatmulAlgoGetHeuristic(self, handle, desc, a, b, c, d, preference, requested, results, count):
        problem, pref = self._problem(desc, a, b, c, d), self.get(preference)
        if self.get(handle) is None or problem is None or pref is None or requested < 1:
            return STATUS_INVALID_VALUE
        ctypes.c_int.from_address(_value(count)).value = 0
        if pref["max_workspace"] < ALGORITHM_WORKSPACE:
            return STATUS_NOT_SUPPORTED  # the fake has no algorithm without workspace
        algorithm_id = next(self._ids)
        self.algorithms[algorithm_id] = {
            "problem": _signature(*problem),
            "workspace": ALGORITHM_WORKSPACE,
            "alignment": [pref[f"align_{x}"] for x in "abcd"],
        }
        result = api.MatmulHeuristicResult.from_address(_value(results))
        result.algo[0] = algorithm_id  # the opaque words name the fake's record
        result.workspaceSize, result.state, result.wavesCount = ALGORITHM_WORKSPACE, 0, 1.0
        ctypes.c_int.from_address(_value(count)).value = 1
        return 0

    def cublasLtMatmul(
        self,
        handle,
        desc,
        alpha,
        a,
        adesc,
        b,
        bdesc,
        beta,
        c,
        cdesc,
        d,
        ddesc,
        algo,
        workspace,
        workspace_size,
        stream,
    ):
        problem = self._problem(desc, adesc, bdesc, cdesc, ddesc)
        algorithm = self.algorithms.get(ctypes.c_uint64.from_address(_value(algo)).value)
        target = FakeStream.by_pointer.get(_value(stream))
        if self.get(handle) is None or problem is None or algorithm is None or target is None:
            return STATUS_INVALID_VALUE
        if algorithm["problem"] != _signature(*problem):
            return STATUS_NOT_SUPPORTED  # an algorithm chosen for another problem
        pointers = [_value(x) for x in (a, b, c, d)]
        if any(p % need for p, need in zip(pointers, algorithm["alignment"])):
            return STATUS_NOT_SUPPORTED  # the algorithm was chosen for stricter alignment than these pointers
        if not _value(workspace) or workspace_size < algorithm["workspace"]:
            return STATUS_NOT_SUPPORTED
        operation, (la, lb, lc, _) = problem
        scalars = [ctypes.c_double if operation["scale"] == api.CUDA_R_64F else ctypes.c_float] * 2
        alpha, beta = (kind.from_address(_value(p)).value for kind, p in zip(scalars, (alpha, beta)))
        tf32 = operation["compute"] == api.CUBLAS_COMPUTE_32F_FAST_TF32

        def number(matrix: np.ndarray) -> np.ndarray:  # what the GEMM computes with: bf16 widened to float32
            return widen_bf16(matrix) if matrix.dtype == np.uint16 else matrix

        def compute():
            self.matmuls += 1
            for i in range(la["batch"]):
                first = number(_matrix(pointers[0], la, i, operation["transa"]))
                second = number(_matrix(pointers[1], lb, i, operation["transb"]))
                if tf32:
                    first, second = round_to_tf32(first), round_to_tf32(second)
                out = _matrix(pointers[3], lc, i, False)
                result = alpha * (first @ second) + (
                    beta * number(_matrix(pointers[2], lc, i, False)) if beta else 0
                )
                out[...] = narrow_bf16(result) if out.dtype == np.uint16 else result

        if target.capturing and not algorithm.get("loaded"):
            return STATUS_EXECUTION_FAILED  # its kernel would be loaded during the capture
        algorithm["loaded"] = True
        target.enqueue(compute, "cublasLtMatmul")
        return 0


def _signature(operation: dict, layouts: list) -> tuple:
    """A problem by value: what an algorithm is chosen for."""
    return tuple(sorted(operation.items())), tuple(tuple(sorted(layout.items())) for layout in layouts)


def _matrix(address: int, layout: dict, index: int, transposed: bool) -> np.ndarray:
    dtype = DTYPES[layout["dtype"]]
    start = address + index * layout["stride"] * np.dtype(dtype).itemsize
    return column_major(start, dtype, layout["rows"], layout["cols"], layout["ld"], bool(transposed))


class FakeCublas(_Objects):
    """libcublas's functions of cuda_blas_api.CUBLAS_FUNCTIONS (the C API: no rule against capture)."""

    def __init__(self):
        super().__init__()
        self.gemms = 0
        self.loaded = set()  # the GEMM kernels launched so far, whose code is loaded

    def cublasCreate_v2(self, out):
        return self.new(out, kind="handle", stream=0, workspace=0, math=0)

    def cublasDestroy_v2(self, handle):
        return 0 if self.objects.pop(_value(handle), None) else STATUS_NOT_INITIALIZED

    def cublasSetStream_v2(self, handle, stream):
        self.get(handle)["stream"] = _value(stream)
        return 0

    def cublasSetWorkspace_v2(self, handle, pointer, size):
        self.get(handle)["workspace"] = _value(pointer) if size else 0
        return 0

    def cublasSetMathMode(self, handle, mode):
        self.get(handle)["math"] = mode
        return 0

    def _gemm(self, dtype, handle, opa, opb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, batch):
        state = self.get(handle)
        target = FakeStream.by_pointer.get(state["stream"]) if state else None
        if target is None or lda < (k if opa else m) or ldb < (n if opb else k) or ldc < m:
            return STATUS_INVALID_VALUE
        if target.capturing and not state["workspace"]:
            return 3  # CUBLAS_STATUS_ALLOC_FAILED: it would allocate its workspace inside the capture
        scalar = ctypes.c_double if dtype == np.float64 else ctypes.c_float
        alpha, item = scalar.from_address(_value(alpha)).value, np.dtype(dtype).itemsize

        def compute():
            self.gemms += 1
            for i in range(batch):
                first = column_major(_value(a) + i * sa * item, dtype, *((k, m) if opa else (m, k)), lda, opa)
                second = column_major(
                    _value(b) + i * sb * item, dtype, *((n, k) if opb else (k, n)), ldb, opb
                )
                column_major(_value(c) + i * sc * item, dtype, m, n, ldc, False)[...] = alpha * (
                    first @ second
                )

        kernel = (dtype, opa, opb, batch > 1)
        if target.capturing and kernel not in self.loaded:
            return STATUS_EXECUTION_FAILED  # its kernel would be loaded during the capture
        self.loaded.add(kernel)
        target.enqueue(compute, "cublas gemm")
        return 0

    def cublasSgemm_v2(self, h, opa, opb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        return self._gemm(np.float32, h, opa, opb, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1)

    def cublasDgemm_v2(self, h, opa, opb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        return self._gemm(np.float64, h, opa, opb, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1)

    def cublasSgemmStridedBatched(
        self, h, opa, opb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, count
    ):
        return self._gemm(
            np.float32, h, opa, opb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, count
        )

    def cublasDgemmStridedBatched(
        self, h, opa, opb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, count
    ):
        return self._gemm(
            np.float64, h, opa, opb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, count
        )


class CupyStyleCublas:
    """cupy_backends.cuda.libs.cublas as it behaves: every call first binds the handle to CuPy's current
    stream, and raises NotImplementedError while that stream captures, whatever the handle; otherwise it
    computes as cuBLAS does."""

    CUBLAS_OP_N, CUBLAS_OP_T, CUBLAS_DEFAULT_MATH = api.CUBLAS_OP_N, api.CUBLAS_OP_T, api.CUBLAS_DEFAULT_MATH

    def __init__(self, cupy):
        self.cupy, self.blas = cupy, FakeCublas()

    def setStream(self, handle, stream):
        target = FakeStream.by_pointer.get(stream)
        if target is not None and target.capturing:
            raise NotImplementedError("calling cuBLAS API during stream capture is currently unsupported")
        self.blas.cublasSetStream_v2(handle, stream)

    def _call(self, function: str, handle, *args):
        self.setStream(handle, self.cupy.get_current_stream().ptr)
        status = getattr(self.blas, function)(handle, *args)
        if status:
            raise RuntimeError(f"{function}: CUBLAS status {status}")

    def create(self):
        handle = ctypes.c_void_p()
        self.blas.cublasCreate_v2(ctypes.addressof(handle))
        return handle.value

    def destroy(self, handle):
        self.blas.cublasDestroy_v2(handle)

    def setMathMode(self, handle, mode):
        self._call("cublasSetMathMode", handle, mode)

    def setWorkspace(self, handle, pointer, size):
        self._call("cublasSetWorkspace_v2", handle, pointer, size)

    def sgemm(self, handle, *args):
        self._call("cublasSgemm_v2", handle, *args)

    def dgemm(self, handle, *args):
        self._call("cublasDgemm_v2", handle, *args)

    def sgemmStridedBatched(self, handle, *args):
        self._call("cublasSgemmStridedBatched", handle, *args)

    def dgemmStridedBatched(self, handle, *args):
        self._call("cublasDgemmStridedBatched", handle, *args)
