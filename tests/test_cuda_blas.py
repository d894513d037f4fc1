"""The ctypes declarations of cuBLAS and cuBLASLt (runtime/cuda_blas_api.py) against the real headers and the
real library, and the search for the libraries (runtime/cuda_libs.py).

A wrong ctypes signature passes every test on a host and corrupts the stack of a GPU process, so the C++
compiler reads each declared function's parameters from cublas_api.h and cublasLt.h (kind and size of each),
each constant's value and the heuristic result's layout. cuBLASLt's descriptors need no GPU: every GEMM of a
training step is described through the real library and each attribute read back. These run wherever the
headers and library are installed (NVIDIA's nvidia-cublas wheel, or a CUDA toolkit) and are skipped elsewhere.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import netc
import pytest
from netc.compiler.autodiff import grad
from netc.compiler.codegen.launch import GemmLaunch
from netc.compiler.errors import NetcError
from netc.compiler.passes.autocast import autocast_bf16
from netc.compiler.passes.simplify import simplify
from netc.runtime import cuda_blas_api as api
from netc.runtime.cuda import compile_step
from netc.runtime.cuda_gemm import _operation, column_major, describe
from netc.runtime.cuda_libs import _nvidia_wheel_roots, load_cuda_library, loaded_paths

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
CXX = shutil.which("g++") or shutil.which("c++")


def _include_dirs() -> list:
    """Folders holding the cuBLAS headers and the CUDA runtime headers they include."""
    roots = [
        Path(root) / sub
        for root in _nvidia_wheel_roots()
        for sub in ("cu13/include", "cu12/include", "cublas/include", "cuda_runtime/include")
    ]
    roots += [Path(os.environ[v]) / "include" for v in ("CUDA_PATH", "CUDA_HOME") if os.environ.get(v)]
    roots.append(Path("/usr/local/cuda/include"))
    return [str(root) for root in roots if root.is_dir()]


HEADERS = [d for d in _include_dirs() if (Path(d) / "cublasLt.h").exists()]
needs_headers = pytest.mark.skipif(not HEADERS or CXX is None, reason="no cuBLAS headers or no C++ compiler")

CTYPES_KINDS = {
    ctypes.c_void_p: {"p8"},
    ctypes.c_int: {"i4", "e4"},
    ctypes.c_int64: {"i8"},
    ctypes.c_uint64: {"u8"},
    ctypes.c_size_t: {"u8"},
}

PROGRAM = r"""
#include <cublasLt.h>
#include <cstddef>
#include <cstdio>
#include <type_traits>
template <class T> void kind() {
    const char *k = std::is_pointer_v<T> ? "p" : std::is_enum_v<T> ? "e" : std::is_floating_point_v<T> ? "f"
                  : std::is_signed_v<T> ? "i" : "u";
    std::printf(" %s%zu", k, sizeof(T));
}
template <class R, class... A> void describe(const char *name, R (*)(A...)) {
    std::printf("function %s", name);
    kind<R>();
    (kind<A>(), ...);
    std::printf("\n");
}
int main() {
BODY
    typedef cublasLtMatmulHeuristicResult_t R;
    std::printf("struct result %zu %zu %zu %zu %zu\n", sizeof(R), offsetof(R, workspaceSize),
                offsetof(R, state),
                offsetof(R, wavesCount), sizeof(cublasLtMatmulAlgo_t));
}
"""


@pytest.fixture(scope="module")
def header_facts(tmp_path_factory) -> dict:
    functions = {**api.CUBLASLT_FUNCTIONS, **api.CUBLAS_FUNCTIONS}
    # decltype reads the prototype without taking the address: nothing to link.
    body = [f'    describe("{name}", static_cast<decltype(&{name})>(nullptr));' for name in functions]
    body += [f'    std::printf("constant {name} %lld\\n", (long long){name});' for name in api.CONSTANTS]
    folder = tmp_path_factory.mktemp("headers")
    source, binary = folder / "facts.cpp", folder / "facts"
    source.write_text(PROGRAM.replace("BODY", "\n".join(body)))
    includes = [flag for d in dict.fromkeys(HEADERS + _include_dirs()) for flag in ("-I", d)]
    build = subprocess.run(
        [CXX, "-std=c++17", *includes, str(source), "-o", str(binary)], capture_output=True, text=True
    )
    assert build.returncode == 0, build.stderr[:4000]
    facts = {"function": {}, "constant": {}}
    for line in subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout.splitlines():
        kind, name, *rest = line.split()
        facts.setdefault(kind, {})[name] = rest
    return facts


@needs_headers
def test_every_declared_function_matches_its_header_prototype(header_facts):
    for name, argtypes in {**api.CUBLASLT_FUNCTIONS, **api.CUBLAS_FUNCTIONS}.items():
        returns, *parameters = header_facts["function"][name]
        assert returns == "e4", f"{name} returns {returns}, not a cublasStatus_t"
        assert len(parameters) == len(argtypes), (
            f"{name}: {len(parameters)} parameters, {len(argtypes)} declared"
        )
        for index, (actual, declared) in enumerate(zip(parameters, argtypes)):
            assert actual in CTYPES_KINDS[declared], (
                f"{name} parameter {index}: {actual}, declared {declared}"
            )


@needs_headers
def test_every_constant_and_the_heuristic_result_match_the_headers(header_facts):
    for name, value in api.CONSTANTS.items():
        assert int(header_facts["constant"][name][0]) == value, name
    size, workspace, state, waves = map(int, header_facts["struct"]["result"][:4])
    result = api.MatmulHeuristicResult
    assert (
        ctypes.sizeof(result),
        result.workspaceSize.offset,
        result.state.offset,
        result.wavesCount.offset,
    ) == (size, workspace, state, waves)
    assert int(header_facts["struct"]["result"][4]) == ctypes.sizeof(ctypes.c_uint64 * 8)


def _real_cublaslt():
    for major in (13, 12):
        try:
            return api.BoundLibrary(load_cuda_library("cublasLt", major), api.CUBLASLT_FUNCTIONS, "cuBLASLt")
        except NetcError:
            continue
    return None


REAL_LT = _real_cublaslt()


@pytest.mark.skipif(REAL_LT is None, reason="libcublasLt is not installed")
@pytest.mark.parametrize("tf32", [False, True])
def test_the_real_cublaslt_takes_every_gemm_description_of_a_training_step(tf32):
    """Descriptors need no GPU: each GEMM of resnet_tiny's step described through the real library, and its
    transposes, batch count and batch strides read back as set."""
    forward = netc.load(EXAMPLES_DIR / "resnet_tiny.net").lower({"N": 3}, training=True)
    joint = simplify(grad(forward))
    step = compile_step(joint, [joint.loss], "float32")
    launches = [launch for launch in step.launches if isinstance(launch, GemmLaunch)]
    assert any(launch.batch > 1 for launch in launches)
    owned = []
    try:
        for launch in launches:
            operation, layouts = describe(REAL_LT, launch, tf32, owned)
            operands = column_major(launch)
            for attribute, operand in [
                (api.CUBLASLT_MATMUL_DESC_TRANSA, operands[0]),
                (api.CUBLASLT_MATMUL_DESC_TRANSB, operands[1]),
            ]:
                assert _read(
                    REAL_LT.cublasLtMatmulDescGetAttribute, operation, attribute, ctypes.c_int32
                ) == (_operation(operand.transposed))
            for layout, operand in zip(layouts, operands):
                read = REAL_LT.cublasLtMatrixLayoutGetAttribute
                assert (
                    _read(read, layout, api.CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, ctypes.c_int32)
                    == launch.batch
                )
                stride = _read(read, layout, api.CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, ctypes.c_int64)
                assert stride == (operand.stride if launch.batch > 1 else 0)
    finally:
        for destroy, descriptor in owned:
            destroy(descriptor)


# cublasLt.h's attributes this test reads back (the runtime sets them through the Create calls' arguments).
LAYOUT_TYPE, DESC_COMPUTE_TYPE, DESC_SCALE_TYPE = 0, 0, 1


@pytest.mark.skipif(REAL_LT is None, reason="libcublasLt is not installed")
def test_the_real_cublaslt_takes_the_bf16_gemms_of_a_training_step():
    """precision="bf16": every GEMM of cifar_net's forward and backward passes (its convolutions' batched ones
    included) described through the real library with bfloat16 operands, float32 compute and float32 scalars,
    and a bfloat16 result, or a float32 one for the weight gradients summed over the batch; read back as set."""
    forward = autocast_bf16(netc.load(EXAMPLES_DIR / "cifar_net.net").lower({"N": 3}, training=True))
    joint = simplify(grad(forward))
    step = compile_step(joint, [joint.loss, *joint.outputs.values()], "bf16")
    launches = [launch for launch in step.launches if isinstance(launch, GemmLaunch)]
    assert {launch.dtype for launch in launches} == {"netc_bf16"}
    assert {launch.c_dtype for launch in launches} == {"", "float"}
    owned = []
    try:
        for launch in launches:
            operation, layouts = describe(REAL_LT, launch, False, owned)
            get = REAL_LT.cublasLtMatmulDescGetAttribute
            assert _read(get, operation, DESC_COMPUTE_TYPE, ctypes.c_int32) == api.CUBLAS_COMPUTE_32F
            assert _read(get, operation, DESC_SCALE_TYPE, ctypes.c_int32) == api.CUDA_R_32F
            read = REAL_LT.cublasLtMatrixLayoutGetAttribute
            types = [_read(read, layout, LAYOUT_TYPE, ctypes.c_uint32) for layout in layouts]
            assert types == [api.CUDA_R_16BF] * 2 + [api.CUDA_R_32F if launch.c_dtype else api.CUDA_R_16BF]
    finally:
        for destroy, descriptor in owned:
            destroy(descriptor)


def _read(getter, descriptor, attribute: int, kind) -> int:
    value, written = kind(), ctypes.c_size_t()
    getter(descriptor, attribute, ctypes.addressof(value), ctypes.sizeof(value), ctypes.addressof(written))
    assert written.value == ctypes.sizeof(value)
    return value.value


def test_libraries_already_loaded_are_found_in_the_process_map(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text(
        "7f00-7f10 r-xp 00000000 08:01 12 /opt/x/nvidia/cu13/lib/libcublasLt.so.13\n"
        "7f10-7f20 r-xp 00000000 08:01 13 /opt/x/nvidia/cu13/lib/libcublas.so.13\n"
        "7f20-7f30 rw-p 00000000 00:00 0 \n"
        "7f30-7f40 r-xp 00000000 08:01 13 /opt/x/nvidia/cu13/lib/libcublas.so.13\n"
    )
    assert loaded_paths("cublas", str(maps)) == ["/opt/x/nvidia/cu13/lib/libcublas.so.13"]
    assert loaded_paths("cublasLt", str(maps)) == ["/opt/x/nvidia/cu13/lib/libcublasLt.so.13"]
    assert loaded_paths("cublas", str(tmp_path / "absent")) == []


def test_a_missing_library_names_every_place_looked_in_and_what_to_install(monkeypatch):
    monkeypatch.setenv("CUDA_PATH", "/nowhere/cuda")
    with pytest.raises(NetcError) as caught:
        load_cuda_library("cublasNothing", 13)
    message = str(caught.value)
    assert "libcublasNothing.so.13" in message and "$CUDA_PATH" in message and "dynamic loader" in message
    assert "pip install nvidia-cublas" in message
