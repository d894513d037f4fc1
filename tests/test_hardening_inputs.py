"""What the Python API is handed: labels out of range, arrays NumPy cannot read, values too large for the
precision, sizes that would not fit in memory (checked before anything is allocated), and .npz files whose
unused arrays would inflate to gigabytes."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch
from tiny import TINY_NET, tiny_data

import netc
from netc.compiler.errors import NetcError
from netc.runtime import memory_limit


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "tiny.net"
    path.write_text(TINY_NET)
    return netc.compile(path, batch=4)


BATCH = {k: v[:4] for k, v in tiny_data().items()}


@pytest.mark.parametrize("bad", [3, -1])
@pytest.mark.parametrize("path", ["forward", "trainer.step", "gradients"])
def test_labels_out_of_range_are_refused_as_pytorch_refuses_them(model, path, bad):
    labels = np.array([0, 1, 2, bad])
    with pytest.raises(IndexError, match="out of bounds"):  # what PyTorch says, for comparison
        torch.nn.functional.cross_entropy(torch.zeros(4, 3), torch.from_numpy(labels))
    run = {
        "forward": lambda: model.forward(x=BATCH["x"], labels=labels),
        "trainer.step": lambda: model.trainer(netc.optim.SGD(lr=0.1)).step(x=BATCH["x"], labels=labels),
        "gradients": lambda: model.gradients(x=BATCH["x"], labels=labels),
    }[path]
    before = model.state_dict()
    complaint = rf"'labels' holds {bad}, out of range \[0, 3\): the network has 3 classes"
    with pytest.raises(NetcError, match=complaint):
        run()
    for name, value in model.state_dict().items():
        assert np.array_equal(value, before[name]), name  # nothing trained on the bad batch
    assert np.isfinite(model.forward(**BATCH)["loss"])  # and good labels still work


def test_token_ids_out_of_range_are_refused_on_the_reference_backend(tmp_path):
    path = tmp_path / "e.net"
    path.write_text("network E {\n input ids: i64[N, 5]\n emb = Embedding(10, 4)\n output ids -> emb\n}")
    model = netc.compile(path, batch=2)
    with pytest.raises(NetcError, match="holds 10, out of range .* 10 rows in its embedding table"):
        model.forward(ids=np.full((2, 5), 10))


@pytest.mark.parametrize(
    "value, complaint",
    [
        ([[1.0, 2.0, 3.0, 4.0]] * 3 + [[1.0]], "not an array of numbers NumPy can read"),
        (torch.zeros(4, 4, dtype=torch.bfloat16), "not an array of numbers NumPy can read"),
        (np.full((4, 4), 1e39), "holds 1e\\+39, too large for the model's float32"),
    ],
    ids=["ragged list", "bfloat16", "float64 beyond float32"],
)
def test_inputs_numpy_cannot_take_as_they_are_are_clear_errors(model, value, complaint):
    with pytest.raises(NetcError, match=complaint):
        model.forward(x=value, labels=BATCH["labels"])


@pytest.mark.parametrize(
    "arguments, complaint",
    [
        ({"batch": 4, "seed": -3}, "the seed must be a non-negative integer, got -3"),
        ({"dims": {"N": -1}}, r"dims\['N'\] must be a positive integer, got -1"),
        ({"dims": {"N": 0}}, r"dims\['N'\] must be a positive integer, got 0"),
        ({"dims": {"N": 2.5}}, r"dims\['N'\] must be a positive integer, got 2.5"),
        ({"batch": 4, "dims": {"T": 3}}, "dims names 'T', not a symbol of Tiny"),
    ],
)
def test_compile_arguments_are_checked(tmp_path, arguments, complaint):
    path = tmp_path / "tiny.net"
    path.write_text(TINY_NET)
    with pytest.raises(NetcError, match=complaint):
        netc.compile(path, **arguments)


def test_a_batch_too_large_for_memory_is_refused_before_anything_is_allocated(tmp_path, monkeypatch):
    path = tmp_path / "tiny.net"
    path.write_text(TINY_NET)
    monkeypatch.setattr("netc.runtime.model.initial_value", lambda *a, **k: pytest.fail("allocated weights"))
    with pytest.raises(NetcError, match=r"Tiny's 'x' of shape \[1000000000000, 4\] needs 16 TB, more than"):
        netc.compile(path, batch=10**12)


def test_a_layer_too_large_for_memory_names_its_parameter():
    text = "network Big {\n    input x: [N, 3]\n    fc = Linear(10 ** 30, 3)\n    output x\n}\n"
    text = text.replace("10 ** 30", str(10**30))
    with pytest.raises(NetcError, match=r"'fc.weight' of shape \[3, 10+\] needs about 10\^31 bytes"):
        netc.compile(netc.load("big.net", text=text), batch=2)


def test_the_cpu_arena_is_checked_before_compiling(tmp_path, monkeypatch):
    path = tmp_path / "tiny.net"
    path.write_text(TINY_NET)
    real = memory_limit.available_bytes
    from netc.runtime import model as model_module

    # Every array fits; the arena of them all does not.
    monkeypatch.setattr(model_module, "available_bytes", lambda: real())
    monkeypatch.setattr(memory_limit, "available_bytes", lambda: 600)
    from netc.runtime import cpu  # imported first: it binds build_shared_library by name

    monkeypatch.setattr(cpu, "build_shared_library", lambda *a, **k: pytest.fail("compiled"))
    model = netc.compile(path, batch=4, backend="cpu")
    with pytest.raises(NetcError, match=r"the arena of Tiny's train step needs .* more than the 600 bytes"):
        model.forward(**BATCH)


def test_unused_npz_arrays_are_never_decompressed(tmp_path, model, monkeypatch):
    data = tmp_path / "bomb.npz"
    np.savez_compressed(data, **tiny_data(), junk=np.zeros(20_000_000, np.uint8))  # 20 MB in 20 kB
    assert data.stat().st_size < 100_000
    read = []
    real = np.lib.npyio.NpzFile.__getitem__
    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", lambda npz, k: read.append(k) or real(npz, k))
    assert netc.evaluate(model, data)["samples"] == 50
    assert sorted(read) == ["labels", "x"]


def test_an_npz_header_claiming_a_huge_array_is_refused_before_reading(tmp_path, model):
    data = tmp_path / "huge.npz"
    header = io.BytesIO()
    huge = {"descr": "<f4", "fortran_order": False, "shape": (10**12, 4)}
    np.lib.format.write_array_header_1_0(header, huge)
    labels = io.BytesIO()
    np.save(labels, tiny_data()["labels"])
    with zipfile.ZipFile(data, "w") as archive:
        archive.writestr("x.npy", header.getvalue() + b"\0" * 64)
        archive.writestr("labels.npy", labels.getvalue())
    with pytest.raises(NetcError, match=r"huge.npz's array 'x', \[1000000000000, 4\] needs 16 TB"):
        netc.evaluate(model, data)
