"""The netc command line, end to end, in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_run import run_cli as run

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_check_prints_the_layer_table(capsys):
    code, out, _ = run(capsys, "check", EXAMPLES / "lenet.net")
    assert code == 0
    assert "network LeNet checks out (symbolic: N)" in out
    assert "conv1" in out and "[N, 6, 28, 28]" in out and "2,416" in out  # fc1: no; conv2 has 2,416 parameters
    assert "total parameters: 61,706" in out


def test_ir_prints_symbolic_and_concrete_graphs(capsys):
    code, out, _ = run(capsys, "ir", EXAMPLES / "lenet.net")
    assert code == 0 and "input x: f32[N,1,32,32]" in out and "param conv1.weight: f32[6,1,5,5]" in out
    assert "minimize" in out and "# lenet.net:" in out
    code, out, _ = run(capsys, "ir", EXAMPLES / "lenet.net", "--batch", 8)
    assert code == 0 and "input x: f32[8,1,32,32]" in out


def test_graph_text_and_dot(capsys, tmp_path):
    code, out, _ = run(capsys, "graph", EXAMPLES / "lenet.net")
    assert code == 0
    assert out.splitlines()[0].startswith("x -> conv1 -> relu -> maxpool2d -> conv2")
    code, _, _ = run(capsys, "graph", EXAMPLES / "resnet_tiny.net", "--format", "dot", "-o", tmp_path / "g.dot")
    text = (tmp_path / "g.dot").read_text()
    assert code == 0 and text.startswith('digraph "ResNetTiny"') and "->" in text and "layer1" in text


def test_run_prints_outputs(capsys):
    code, out, _ = run(capsys, "run", EXAMPLES / "cifar_net.net", "--batch", 2)
    assert code == 0 and "logits: [2, 10] float32" in out and "loss:" in out


def test_user_errors_exit_2_with_a_located_message(capsys, tmp_path):
    bad = tmp_path / "bad.net"
    bad.write_text("network Bad {\n    input x: [N, 4]\n    fc = Linear(3, 2)\n    output x -> fc\n}\n")
    code, _, err = run(capsys, "check", bad)
    assert code == 2
    assert err.startswith(f"{bad}:4:17: error: fc expects 3 input features, got 4 from a tensor of shape [N, 4]")
    assert "^" in err


def test_missing_file_exits_2(capsys, tmp_path):
    code, _, err = run(capsys, "check", tmp_path / "nope.net")
    assert code == 2 and "error:" in err


@pytest.mark.parametrize("command", ["check", "ir", "graph", "run"])
def test_every_command_runs_on_every_example(capsys, command):
    for path in sorted(EXAMPLES.glob("*.net")):
        if path.name == "resnet_blocks.net":
            continue
        code, _, err = run(capsys, command, path)
        assert code == 0, (path, err)


def test_ir_grad_reports_simplification(capsys):
    code, out, _ = run(capsys, "ir", EXAMPLES / "lenet.net", "--grad")
    assert code == 0 and "output grad:conv1.weight" in out and "fold" in out
    before, after = [int(w) for w in out.splitlines()[-1].split() if w.isdigit()]
    assert after < before


def test_graph_backward_lists_layers_in_reverse(capsys):
    code, out, _ = run(capsys, "graph", EXAMPLES / "lenet.net", "--backward")
    scopes = [line.split()[0] for line in out.splitlines()]
    assert code == 0 and scopes[0] == "mse_loss" and scopes[-1] == "conv1"
    assert "=> fc3.weight, fc3.bias" in out


def test_compile_writes_every_stage_and_the_plan_the_runtime_uses(capsys, tmp_path):
    """`netc compile` compiles the steps as a model runs them (state resident, updated in place), so its report
    and plan are the runtime's: the arena of the training step is the one trainer.step allocates."""
    import json

    import netc
    import numpy as np

    code, out, _ = run(capsys, "compile", EXAMPLES / "lenet.net", "--backend", "cpu", "--batch", 8, "-o", tmp_path)
    assert code == 0
    for suffix in ("ir", "grad", "fused", "train.c", "infer.c", "plan.json", "report.txt"):
        assert (tmp_path / f"lenet.{suffix}").stat().st_size > 0, suffix
    plan = json.loads((tmp_path / "lenet.plan.json").read_text())["train"]
    assert plan["peak_live_bytes"] <= plan["arena_bytes"] < plan["naive_bytes"]
    assert "conv1.weight" in plan["updated_in_place"]
    assert "optimizer.momentum_buffer.fc3.bias" in plan["updated_in_place"]
    model = netc.compile(EXAMPLES / "lenet.net", batch=8, backend="cpu")
    trainer = model.trainer(netc.optim.SGD(lr=0.01, momentum=0.9))
    rng = np.random.default_rng(0)
    trainer.step(x=rng.standard_normal((8, 1, 32, 32)).astype("float32"),
                 target=rng.standard_normal((8, 10)).astype("float32"))
    assert trainer.compiled.plan.arena_bytes == plan["arena_bytes"]
    report = (tmp_path / "lenet.report.txt").read_text()
    assert f"arena {plan['arena_bytes']:,} bytes" in report
