"""`--dim NAME=SIZE` on every command that compiles, and train/eval/predict binding symbols from the data's
shapes: a causal sequence model whose length T is a symbol, and whose last position is read by a slice that
needs T's size."""

from __future__ import annotations

import netc
import numpy as np
from cli_run import run_cli

SEQUENCE = """
network Seq {
    input idx: i64[N, T]
    input targets: i64[N, T]
    emb = Embedding(10, 8)
    param pos: [T, 8] = normal(0, 0.02)
    head = Linear(8, 10)
    h = (idx -> emb) + pos
    mixed = masked_fill(h @ transpose(h, 1, 2), tril(ones(T, T)) == 0, -inf) -> softmax(dim = -1)
    logits = mixed @ h -> head
    output logits[:, -1]
    minimize cross_entropy(reshape(logits, -1, 10), reshape(targets, -1))
}
"""


def write(tmp_path, length: int = 6):
    rng = np.random.default_rng(0)
    net, data = tmp_path / "seq.net", tmp_path / "data.npz"
    net.write_text(SEQUENCE)
    np.savez(data, idx=rng.integers(0, 10, (12, length)), targets=rng.integers(0, 10, (12, length)))
    return net, data


def test_check_and_ir_take_dims(tmp_path, capsys):
    net, _ = write(tmp_path)
    code, _, err = run_cli(capsys, "check", net)
    assert code == 2 and "needs its size, which is the symbol T" in err and "--dim T=SIZE" in err
    code, out, _ = run_cli(capsys, "check", net, "--dim", "T=6")
    assert code == 0 and "(symbolic: N)" in out
    code, out, _ = run_cli(capsys, "ir", net, "--dim", "T=6", "--batch", "3")
    assert code == 0 and "param pos: f32[6,8]" in out
    code, _, err = run_cli(capsys, "check", net, "--dim", "Q=3")
    assert code == 2 and "dims names 'Q', not a symbol of Seq (its symbols: N, T)" in err


def test_train_eval_and_predict_bind_the_sequence_length_from_the_data(tmp_path, capsys):
    net, data = write(tmp_path)
    checkpoint = tmp_path / "seq.safetensors"
    code, _, err = run_cli(
        capsys,
        "train",
        net,
        "--data",
        data,
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--quiet",
        "--checkpoint",
        checkpoint,
    )
    assert code == 0, err
    code, out, _ = run_cli(capsys, "eval", net, "--weights", checkpoint, "--data", data)
    assert code == 0 and "12 samples" in out
    predictions = tmp_path / "out.npz"
    code, _, _ = run_cli(capsys, "predict", net, "--weights", checkpoint, "--data", data, "-o", predictions)
    assert code == 0 and np.load(predictions)["output"].shape == (12, 10)


def test_api_dims_bind_while_loading():
    model = netc.compile(netc.load("seq.net", text=SEQUENCE, dims={"T": 5}), batch=2)
    assert model.graph.inputs["idx"].shape == (2, 5)
    assert netc.load("seq.net", text=SEQUENCE, dims={"T": 5}).symbols == ("N",)
