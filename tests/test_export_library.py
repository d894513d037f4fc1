"""`netc export`: LeNet and the digits CNN as standalone C libraries, built with make, against the Python cpu
backend (bit for bit: the same kernels, BLAS, flags and thread count) and PyTorch (the saved weights load into
the twins and compute what the library computed).

Each network is exported and built once (a module fixture); tests/export_library/check.c trains 20 steps and
runs inference, hostile.c (with AddressSanitizer) feeds the loader damaged and mismatched files. The CUDA
target's folder is compiled and linked with nvcc where nvcc and cuBLAS are installed, and its demo run: on a
GPU it trains; without one it must fail cleanly, saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import netc
import numpy as np
import pytest
import torch
from netc.cli import main as netc_main
from netc.runtime.cpu import blas_build_options
from safetensors.torch import load_file, save_file
from twins import DigitsCNN, LeNet

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = Path(__file__).resolve().parent / "export_library"
STEPS = 20
# (file, batch, twin, the optimiser's flags and the same optimiser in Python, whether the folder ships the
# twin's weights (--weights) rather than netc's initial ones)
NETWORKS = {
    "lenet": ("examples/lenet.net", 4, LeNet, ["--lr", "0.05", "--momentum", "0.9"],
              lambda: netc.optim.SGD(lr=0.05, momentum=0.9), False),
    "digits_cnn": ("examples/digits/cnn.net", 8, DigitsCNN, ["--optimizer", "adam", "--lr", "0.01"],
                   lambda: netc.optim.Adam(lr=0.01), True),
}
needs_cc = pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                              reason="make and a C compiler are needed")


def blas_make_variables() -> list:
    """make's BLAS_CFLAGS and BLAS_LIBS for the BLAS the Python backend links (scipy-openblas32)."""
    blas = blas_build_options()
    defines = [f for f in blas["flags"] if f.startswith("-D")]
    rpath = [f for f in blas["flags"] if f.startswith("-Wl")]
    cflags = [*(f"-I{d}" for d in blas["include_dirs"]), *defines]
    libs = [*(f"-L{d}" for d in blas["library_dirs"]), *(f"-l{lib}" for lib in blas["libraries"]), *rpath]
    return [f"BLAS_CFLAGS={' '.join(cflags)}", f"BLAS_LIBS={' '.join(libs)}"]


def thread_env() -> dict:
    """The thread count of this process's OpenMP, for the programs: equal counts give equal bits."""
    threads = os.environ.get("OMP_NUM_THREADS") or str(len(os.sched_getaffinity(0)))
    return {**os.environ, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": "1"}


def run(args, folder: Path, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=folder, capture_output=True, text=True, env=thread_env(), check=False,
                            **kwargs)
    assert result.returncode == 0, f"{args}: {result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def random_batches(model, count: int, rng) -> list:
    """`count` batches of every input: normal floats, labels over the classes."""
    batches = []
    for _ in range(count):
        batch = {}
        for name in model.input_names():
            leaf = model.graph.inputs[name]
            if leaf.dtype == "i64":
                batch[name] = rng.integers(0, 10, size=leaf.shape).astype(np.int64)
            else:
                batch[name] = rng.standard_normal(leaf.shape).astype(np.float32)
        batches.append(batch)
    return batches


@pytest.fixture(scope="module", params=list(NETWORKS))
def exported(request, tmp_path_factory):
    """(name, folder, the batches fed, the Python model's results) for one network, built and run once."""
    name = request.param
    path, batch, twin, flags, _, from_twin = NETWORKS[name]
    folder = tmp_path_factory.mktemp(name) / "lib"
    if from_twin:
        torch.manual_seed(0)
        weights = folder.parent / "twin.safetensors"
        save_file(twin().state_dict(), weights)
        flags = [*flags, "--weights", str(weights)]
    assert netc_main(["export", str(ROOT / path), "--batch", str(batch), "-o", str(folder), *flags]) == 0
    if from_twin:  # the folder ships them as they are
        for key, tensor in load_file(weights).items():
            assert torch.equal(load_file(folder / "weights.safetensors")[key], tensor), key
    shutil.copy(PROGRAMS / "check.c", folder)
    run(["make", "-j2", "all", "check", *blas_make_variables()], folder)
    model = netc.compile(ROOT / path, batch=batch, backend="cpu")
    batches = random_batches(model, STEPS + 1, np.random.default_rng(7))
    data = b"".join(np.ascontiguousarray(array).tobytes() for feeds in batches for array in feeds.values())
    (folder / "data.bin").write_bytes(data)
    run(["./check", "data.bin", str(STEPS)], folder)
    return name, folder, batches, python_results(name, model, folder, batches)


def python_results(name: str, model, folder: Path, batches: list) -> dict:
    """What the Python cpu backend computes from the exported weights, in check.c's order."""
    model.load_state_dict(load_file(folder / "weights.safetensors"))
    trainer = model.trainer(NETWORKS[name][4]())
    losses = [trainer.step(**feeds) for feeds in batches[:STEPS]]
    last = batches[STEPS]
    reads = {n: last[n] for n in ("x",)}  # the input the outputs read: forward without labels returns no loss
    trained = model.forward(**reads)  # BatchNorm's running statistics move once more
    model.eval()
    evaluated = model.forward(**reads)
    state = model.state_dict()
    eval_loss = trainer.step(**last)  # a training step in eval mode
    return {"losses": np.array(losses, np.float32), "eval": evaluated, "train": trained, "state": state,
            "eval_loss": np.array([eval_loss], np.float32)}


def read_outputs(path: Path, like: dict) -> dict:
    flat = np.fromfile(path, dtype=np.uint8)
    out, at = {}, 0
    for name, array in like.items():
        out[name] = flat[at : at + array.nbytes].view(array.dtype).reshape(array.shape)
        at += array.nbytes
    assert at == flat.size
    return out


@needs_cc
def test_training_and_inference_equal_the_cpu_backend_bit_for_bit(exported):
    _, folder, _, python = exported
    losses = np.fromfile(folder / "losses.bin", dtype=np.float32)
    np.testing.assert_array_equal(losses, python["losses"])
    for mode in ("eval", "train"):
        for name, array in read_outputs(folder / f"{mode}.bin", python[mode]).items():
            np.testing.assert_array_equal(array, python[mode][name], err_msg=f"{mode} {name}")
    saved = load_file(folder / "trained.safetensors")
    assert list(saved) == list(python["state"]) or set(saved) == set(python["state"])
    for key, array in python["state"].items():
        np.testing.assert_array_equal(saved[key].numpy(), array, err_msg=key)
    eval_loss = np.fromfile(folder / "eval_loss.bin", dtype=np.float32)
    np.testing.assert_array_equal(eval_loss, python["eval_loss"])
    initial = load_file(folder / "weights.safetensors")
    assert not torch.equal(saved["fc1.weight" if "fc1.weight" in saved else "fc.weight"], initial[
        "fc1.weight" if "fc1.weight" in saved else "fc.weight"])  # it trained


@needs_cc
def test_saved_weights_load_into_the_pytorch_twin_and_compute_the_same(exported):
    name, folder, batches, python = exported
    twin = NETWORKS[name][2]()
    twin.load_state_dict(load_file(folder / "trained.safetensors"))  # strict: every name, shape and dtype
    twin.eval()
    last = {k: torch.from_numpy(v) for k, v in batches[STEPS].items()}
    with torch.no_grad():
        out = twin(**last)
    for key, array in read_outputs(folder / "eval.bin", python["eval"]).items():
        np.testing.assert_allclose(array, out[key].numpy(), rtol=1e-4, atol=1e-5)


@needs_cc
def test_demo_runs(exported):
    name, folder, _, _ = exported
    result = run(["./demo"], folder)
    assert "training step 3: loss" in result.stdout and "saved demo.safetensors" in result.stdout
    NETWORKS[name][2]().load_state_dict(load_file(folder / "demo.safetensors"))
    raw = (folder / "demo.safetensors").read_bytes()
    header = json.loads(raw[8 : 8 + struct.unpack("<Q", raw[:8])[0]])
    assert header["__metadata__"] == {"format": "pt"}  # what safetensors.torch.save_file writes


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
@pytest.mark.only_where(lambda exported, **_: exported == "lenet")  # one network: the same template
def test_cmake_builds_what_make_builds(exported, tmp_path):
    """The CMakeLists.txt builds the library and demo with the Makefile's flags: the same bits come out."""
    name, folder, _, _ = exported
    source = tmp_path / "src"
    built = shutil.ignore_patterns("*.o", "*.a", "*.so", "demo", "check", "*.bin")
    shutil.copytree(folder, source, ignore=built)
    blas = blas_build_options()
    library = Path(blas["library_dirs"][0]) / f"lib{blas['libraries'][0]}.so"
    defines = " ".join(f for f in blas["flags"] if f.startswith("-D"))
    run(["cmake", "-S", str(source), "-B", "build", f"-DBLAS_LIBRARIES={library}",
         f"-DBLAS_INCLUDE_DIR={blas['include_dirs'][0]}", f"-DCMAKE_C_FLAGS={defines}"], tmp_path)
    run(["cmake", "--build", "build", "-j2"], tmp_path)
    assert (tmp_path / "build" / "libnetc_model.a").is_file()
    assert (tmp_path / "build" / "libnetc_model.so").is_file()
    run([str(tmp_path / "build" / "demo"), str(folder / "weights.safetensors")], tmp_path)
    run(["./demo"], folder)
    assert (tmp_path / "demo.safetensors").read_bytes() == (folder / "demo.safetensors").read_bytes()


INFERENCE_ONLY = """
network Scorer {
    input x: [N, 6]
    fc = Linear(6, 3)
    scores = x -> fc -> softmax(dim = 1)
    output scores
}
"""

PROBE = r"""
#include <stdio.h>
#include "netc_model.h"
int main(void) {
    netc_model *m = netc_model_create();
    float x[NETC_INPUT_X_COUNT] = {0}, scores[NETC_OUTPUT_SCORES_COUNT];
    const void *inputs[] = {x};
    void *outputs[] = {scores};
    float loss = netc_model_train_step(m, inputs);
    printf("%s %s\n", loss != loss ? "nan" : "number", netc_model_error(m));
    int status = netc_model_forward(m, inputs, outputs);
    printf("%d %g\n", status, scores[0] + scores[1] + scores[2]);
    netc_model_free(m);
    return 0;
}
"""


@needs_cc
def test_a_network_that_minimises_nothing_exports_inference_alone(tmp_path):
    (tmp_path / "scorer.net").write_text(INFERENCE_ONLY)
    folder = tmp_path / "lib"
    assert netc_main(["export", str(tmp_path / "scorer.net"), "--batch", "2", "-o", str(folder)]) == 0
    assert not list(folder.glob("train_step*"))
    (folder / "probe.c").write_text(PROBE)
    run(["make", "-j2", "demo", "probe", *blas_make_variables()], folder)  # `make NAME` builds NAME.c
    assert "training step" not in run(["./demo"], folder).stdout
    lines = run(["./probe"], folder).stdout.splitlines()
    assert lines[0] == "nan Scorer minimises nothing: its library has no training step"
    assert lines[1].startswith("0 ") and float(lines[1].split()[1]) == pytest.approx(1.0)


# -- hostile files ------------------------------------------------------------------------------------------


def safetensors_bytes(header: dict, data: bytes, pad: bool = True) -> bytes:
    text = json.dumps(header).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def hostile_files(good: Path) -> dict:
    """Name -> the bytes of a file that must not load: damaged, or not the network's weights."""
    raw = good.read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    header, data = json.loads(raw[8 : 8 + length]), raw[8 + length :]
    names = [n for n in header if n != "__metadata__"]
    first, second = names[0], names[1]

    def edited(change) -> bytes:
        h = json.loads(json.dumps(header))
        change(h)
        return safetensors_bytes(h, data)

    good_text = safetensors_bytes(header, data)

    def shift(h):  # the first tensor's range moved onto the second's
        h[first]["data_offsets"] = h[second]["data_offsets"]

    return {
        "empty": b"",
        "seven_bytes": raw[:7],
        "huge_header_length": struct.pack("<Q", 2**62) + raw[8:],
        "header_past_end": struct.pack("<Q", len(raw)) + raw[8:],
        "truncated_data": raw[: len(raw) - 5],
        "truncated_header": raw[: 8 + length // 2],
        "not_json": struct.pack("<Q", 8) + b"{{{{{{{{" + data,
        "trailing_garbage": _with_header_text(json.dumps(header).encode() + b" x", data),
        "extra_data": raw + b"\0" * 8,
        "overlap": edited(shift),
        "negative_offset": good_text.replace(b'"data_offsets": [0,', b'"data_offsets": [-4,'),
        "float_shape": edited(lambda h: h[first].update(shape=[1.5])),
        "unknown_dtype": edited(lambda h: h[first].update(dtype="F99")),
        "unknown_key": edited(lambda h: h[first].update(strides=[1])),
        "missing_key": edited(lambda h: h[first].pop("shape")),
        "shape_bytes_mismatch": edited(lambda h: h[first].update(shape=[*h[first]["shape"], 2])),
        "duplicate_name": good_text.replace(f'"{second}"'.encode(), f'"{first}"'.encode()),
        "nul_in_name": edited(lambda h: h.update({"a\u0000b": h.pop(first)})),
        "wrong_dtype": edited(lambda h: h[first].update(dtype="I32")),
        "wrong_shape": edited(lambda h: h[first].update(shape=list(reversed(h[first]["shape"])) + [1])),
        "missing_tensor": _without(header, data, first),
        "unexpected_tensor": _renamed(header, data, first, "conv9.weight"),
        "nested_metadata": edited(lambda h: h.update(__metadata__={"a": {"b": "c"}})),
        "not_utf8": good_text.replace(b'"pt"', b'"\xf8t"'),  # the safetensors package refuses it too
    }


def _with_header_text(text: bytes, data: bytes) -> bytes:
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def _without(header: dict, data: bytes, name: str) -> bytes:
    begin, end = header[name]["data_offsets"]
    h = {k: dict(v) for k, v in header.items() if k != name}
    for k, v in h.items():
        if k != "__metadata__" and v["data_offsets"][0] >= end:
            v["data_offsets"] = [v["data_offsets"][0] - (end - begin), v["data_offsets"][1] - (end - begin)]
    return safetensors_bytes(h, data[:begin] + data[end:])


def _renamed(header: dict, data: bytes, name: str, new: str) -> bytes:
    h = {(new if k == name else k): v for k, v in header.items()}
    return safetensors_bytes(h, data)


@needs_cc
@pytest.mark.only_where(lambda exported, **_: exported == "digits_cnn")  # one network: the same reader
def test_hostile_files_are_refused_with_a_message_and_change_nothing(exported):
    name, folder, _, _ = exported
    files = hostile_files(folder / "weights.safetensors")
    paths = []
    for key, content in files.items():
        (folder / f"bad_{key}.safetensors").write_bytes(content)
        paths.append(f"bad_{key}.safetensors")
    shutil.copy(PROGRAMS / "hostile.c", folder)
    kernels = sorted(str(p.name) for p in folder.glob("*.o") if not p.name.startswith("netc_"))
    sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g"]
    blas = [v.split("=", 1)[1] for v in blas_make_variables()]
    sources = "hostile.c netc_model.c netc_plan.c netc_safetensors*.c netc_device_cpu.c"
    command = f"cc {' '.join(sanitize)} -std=c11 -fopenmp {blas[0]} -o hostile {sources} {' '.join(kernels)}"
    run(["sh", "-c", f"{command} {blas[1]} -lm"], folder)
    lines = run(["./hostile", "weights.safetensors", *paths], folder).stdout.splitlines()
    refusals = dict(zip(files, lines))
    for key, line in refusals.items():
        assert line.startswith("refused ") and f"bad_{key}" in line, (key, line)
    assert "unexpected tensor 'conv9.weight'" in refusals["unexpected_tensor"]
    assert "missing tensor" in refusals["missing_tensor"]
    assert "another tensor's bytes" in refusals["overlap"]  # an overlap, or the gap it leaves
    rest = lines[len(files) :]
    assert rest[0] == "unchanged"
    # The message of the Python runtime (runtime/model.py), word for word.
    python_message = "input 'labels' holds 1000, out of range [0, 10): the network has 10 classes"
    assert rest[1] == f"train_step nan: {python_message}"
    assert rest[3].startswith("save: -1 no/such/folder/w.safetensors: ")
    assert rest[4] == "error after a good call: []"
    assert not list(folder.glob("*.tmp-*"))  # an atomic save leaves no temporary behind
    load_file(folder / "saved.safetensors")
    check_initial_weights(load_file(folder / "initial.safetensors"))


def check_initial_weights(state: dict) -> None:
    """netc_model_create's weights follow PyTorch's default initialisation: the twin's distributions."""
    twin = DigitsCNN().state_dict()
    assert list(state) == list(twin)
    for key, reference in twin.items():
        tensor = state[key]
        assert tensor.dtype == reference.dtype and tensor.shape == reference.shape, key
        if reference.dim() > 1 or key == "fc.bias":  # uniform(-bound, bound), bound 1/sqrt(fan_in)
            fan_in = twin[key.replace("bias", "weight")][0].numel()
            bound = 1 / np.sqrt(fan_in)
            assert tensor.abs().max() <= bound, key
            assert tensor.std().item() == pytest.approx(bound / np.sqrt(3), rel=0.2), key
        else:  # BatchNorm: ones and zeros, as torch makes them
            assert torch.equal(tensor, reference), key


# -- the CUDA target ----------------------------------------------------------------------------------------


def cublas_include() -> Path | None:
    """The folder of cublas_v2.h: the CUDA toolkit's, or NVIDIA's cuBLAS wheel's."""
    import importlib.util

    nvcc = shutil.which("nvcc")
    candidates = [Path(nvcc).resolve().parent.parent / "include"] if nvcc else []
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        candidates += sorted(Path(root).glob("*/include"))
    return next((c for c in candidates if (c / "cublas_v2.h").is_file()), None)


@pytest.mark.skipif(shutil.which("nvcc") is None or cublas_include() is None,
                    reason="nvcc and cuBLAS's headers are needed to compile the CUDA target")
def test_cuda_target_compiles_with_nvcc(tmp_path):
    folder = tmp_path / "lenet_cuda"
    assert netc_main(["export", str(ROOT / "examples/lenet.net"), "--batch", "4", "-o", str(folder),
                      "--target", "cuda"]) == 0
    assert (folder / "train_step.cu").is_file() and (folder / "netc_device_cuda.cu").is_file()
    include = cublas_include()
    run(["make", "-j3", "all", f"CUDA_CFLAGS=-I{include}", f"CUDA_LIBS={cublas_libs(include)}",
         "CUDA_ARCH=-gencode arch=compute_80,code=sm_80"], folder)
    assert (folder / "libnetc_model.a").stat().st_size > 0 and (folder / "libnetc_model.so").is_file()
    demo = subprocess.run(["./demo"], cwd=folder, capture_output=True, text=True, check=False)
    if demo.returncode:  # no GPU here: the library says so, and nothing crashes
        assert demo.returncode == 1 and demo.stderr.startswith("demo: netc_model_create failed: "), demo
    else:
        assert "training step 3: loss" in demo.stdout and "saved demo.safetensors" in demo.stdout


def cublas_libs(include: Path) -> str:
    """make's CUDA_LIBS for the cuBLAS beside `include` (NVIDIA's wheel ships libcublas.so.N alone)."""
    libraries = sorted((include.parent / "lib").glob("libcublas.so*"))
    if not libraries:
        return "-lcublas -lcudart"
    folder = libraries[0].parent
    return f"-L{folder} -l:{libraries[0].name} -lcudart -Xlinker -rpath,{folder}"
