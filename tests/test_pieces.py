"""Pieces placed inside their whole (compiler/passes/pieces.py), convolutions in chunks of the batch that use
them (functional/conv.py chunk_bounds), and the arena they give against PyTorch's peak allocation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from twins import EXAMPLES, CifarNet, assert_matches_twin, example_inputs, torch_peak_bytes

import netc
from netc.compiler.functional import conv
from netc.compiler.ir import Graph
from netc.compiler.optim import SGD
from netc.compiler.passes.kernel import reads
from netc.compiler.passes.pieces import concat_starts, piece_places, slice_start
from netc.compiler.pipeline import StepSpec, compile_network_step
from netc.compiler.shapes import PIECE_ALIGNMENT, TensorType
from netc.runtime.cpu import CpuBackend

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


def test_a_slice_or_a_concat_is_placed_only_where_its_pieces_are_contiguous_blocks():
    graph = Graph("blocks")
    x = graph.add_leaf("input", "x", TensorType((8, 4, 16), "f32"))
    cut = lambda starts, stops: graph.emit("slice", x, starts=starts, stops=stops)  # noqa: E731
    assert slice_start(cut((2, 0, 0), (6, 4, 16))) == 2 * 64  # samples 2..5: one block
    assert slice_start(cut((3, 1, 0), (4, 3, 16))) == 3 * 64 + 16  # rows 1..2 of sample 3: one block
    assert slice_start(cut((0, 1, 0), (8, 3, 16))) is None  # rows 1..2 of every sample: strided
    assert slice_start(cut((0, 0, 0), (8, 4, 8))) is None  # half of every row
    rows = graph.emit("slice", x, starts=(0, 0, 0), stops=(8, 4, 16), steps=(2, 1, 1))
    assert slice_start(rows) is None  # every other sample
    assert concat_starts(graph.emit("concat", x, x, axis=0)) == [0, 8 * 64]
    assert concat_starts(graph.emit("concat", x, x, axis=1)) is None
    one = cut((5, 0, 0), (6, 4, 16))
    assert concat_starts(graph.emit("concat", one, one, axis=1)) == [0, 64]  # one sample: its rows are blocks


@pytest.fixture(scope="module")
def chunked(tmp_path_factory):
    """CIFAR-10's classifier at batch 16 with every convolution in chunks, however small its columns."""
    patch = pytest.MonkeyPatch()
    patch.setattr(conv, "COLUMN_FLOOR", 0)
    patch.setenv("NETC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))  # lowered graphs are cached
    try:
        model = netc.compile(EXAMPLES_DIR / "cifar_net.net", batch=16, backend="cpu", seed=0)
        step = model.compile_step("gradients", until="planned")
        yield model, step
    finally:
        patch.undo()


def test_a_chunked_convolution_reads_and_writes_its_pieces_in_place(chunked):
    """The chunks' slices of the input and of the output's gradient, the joins of their outputs and of the
    input's gradient: no kernel copies any of them, each lies in its whole's bytes, aligned as a buffer is."""
    _, step = chunked
    ops = [v.op for v in step.graph.values]
    assert ops.count("slice") >= 8 and ops.count("concat") >= 2  # both convolutions are in chunks
    assert not [k for k in step.kernels if k.kind == "movement"]
    places = piece_places(step.kernels, step.float_type, reads)
    values = {v.id: v for v in step.graph.values}
    assert {values[p].op for p in places} >= {"slice", "matmul", "fold"}
    offsets, item = step.plan.offsets, 4
    for piece, (whole, at) in places.items():
        assert offsets[piece] == offsets[whole] + at and at % (PIECE_ALIGNMENT * item) == 0
        assert at + math.prod(values[piece].shape) * item <= math.prod(values[whole].shape) * item


def test_a_chunked_convolution_gives_torchs_loss_and_gradients(chunked):
    model, _ = chunked
    torch.manual_seed(0)
    twin = CifarNet()
    model.load_state_dict({k: v.detach().numpy() for k, v in twin.state_dict().items()})
    inputs = example_inputs(EXAMPLES["cifar_net.net"][1], 16, np.random.default_rng(1))
    got = model.gradients(**inputs)
    model.eval()
    twin.eval()  # no dropout or batch statistics in this network: the forward pass compares as it is
    assert_matches_twin(twin, inputs, got, lambda: model.forward(**inputs))


@pytest.mark.parametrize("name", ["lenet.net", "cifar_net.net", "resnet_tiny.net"])
def test_the_training_steps_arena_is_no_larger_than_torchs_peak(name):
    """The arena of a training step (SGD with momentum) at batch 64 against PyTorch's peak allocation for the
    same step, counted from its tensors (twins.torch_peak_bytes): im2col columns held for the whole batch made
    cifar_net's arena 3x PyTorch's (benchmarks/bench_memory.py has every network and batch)."""
    twin_class, spec = EXAMPLES[name]
    torch.manual_seed(0)
    twin = twin_class().train()
    tensors = {k: torch.from_numpy(v) for k, v in example_inputs(spec, 64, np.random.default_rng(0)).items()}
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9)
    twin(**tensors)["loss"].backward()
    optimizer.step()
    peak = torch_peak_bytes(twin, tensors, optimizer)
    network = netc.load(EXAMPLES_DIR / name)
    train = StepSpec("train", optimizer=SGD(lr=0.01, momentum=0.9))
    step = compile_network_step(network, {"N": 64}, train, CpuBackend(), until="planned")
    assert step.plan.arena_bytes <= peak, (step.plan.arena_bytes, peak)
