"""What the registry-generated parity tests (test_layers.py, test_functions.py) cannot express for transposed
convolutions, padding, interpolation and convolutions' inputs: unbatched inputs [C, *spatial] (their first dim
would be taken for the batch there), one-element tuples for per-axis arguments, ConvTranspose's
forward(x, output_size=...), the misuses that must be located errors (exit 2), a fusion bug that nearest
upsampling's repeat exposed, and the autoencoder example (against its twin, and the README's commands).

The unbatched network runs on the reference and cpu backends against a PyTorch twin with the same weights:
outputs, and the gradients of a loss over all of them (parameters and inputs).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import netc
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_run import run_cli
from netc.compiler.errors import NetcError

UNBATCHED = """
network Unbatched {
    input a: [3, 9]
    input b: [2, 7, 6]
    input c: [4, 5, 5]
    input w: [3, 2, 2]
    c1 = Conv1d(3, 4, 3, stride = (2,), padding = (1,), padding_mode = "circular")
    c2 = Conv2d(2, 3, (3,), padding = 1, padding_mode = "replicate")
    t2 = ConvTranspose2d(4, 2, 3, stride = 2, padding = 1, output_padding = 1, groups = 2)
    pad = ReflectionPad2d((1, 2, 0, 1))
    o1 = a -> c1 -> maxpool1d(2)
    o2 = b -> c2 -> avgpool2d((2,), stride = (1,))
    o3 = c -> t2 -> adaptive_avg_pool2d(3)
    o4 = b -> pad
    o5 = conv_transpose1d(a, w, stride = 2, padding = 1)
    o6 = t2(c, output_size = (9, 9))
    o7 = max_pool2d(b, 3, stride = 2, padding = 1, ceil_mode = true)
    o8 = interpolate(reshape(b, 1, 2, 7, 6), scale_factor = (1.5, 0.7), mode = "bilinear")
    o9 = interpolate(reshape(c, 1, 4, 5, 5), scale_factor = (2, 4)) -> pixel_unshuffle(2)
    output o1, o2, o3, o4, o5, o6, o7, o8, o9
    minimize sum(o1 * o1) + sum(o2 * o2) + sum(o3 * o3) + sum(o4 * o4) + sum(o5 * o5) + sum(o6 * o6) + (
        sum(o7 * o7) + sum(o8 * o8) + sum(o9 * o9))
}
"""


def torch_unbatched(state: dict, t: dict) -> dict:
    """The twin of UNBATCHED, on tensors `t` with the parameters `state`."""
    c1 = torch.nn.Conv1d(3, 4, 3, stride=2, padding=1, padding_mode="circular").double()
    c2 = torch.nn.Conv2d(2, 3, 3, padding=1, padding_mode="replicate").double()
    t2 = torch.nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1, groups=2).double()
    for name, module in (("c1", c1), ("c2", c2), ("t2", t2)):
        module.load_state_dict(
            {k.removeprefix(f"{name}."): v for k, v in state.items() if k.startswith(name)}
        )
    outs = {
        "o1": F.max_pool1d(c1(t["a"]), 2),
        "o2": F.avg_pool2d(c2(t["b"]), 2, stride=1),
        "o3": F.adaptive_avg_pool2d(t2(t["c"]), 3),
        "o4": torch.nn.ReflectionPad2d((1, 2, 0, 1))(t["b"]),
        "o5": F.conv_transpose1d(t["a"], t["w"], stride=2, padding=1),
        "o6": t2(t["c"], output_size=(9, 9)),
        "o7": F.max_pool2d(t["b"], 3, stride=2, padding=1, ceil_mode=True),
        "o8": F.interpolate(t["b"][None], scale_factor=(1.5, 0.7), mode="bilinear"),
        "o9": F.pixel_unshuffle(F.interpolate(t["c"][None], scale_factor=(2, 4)), 2),
    }
    loss = sum((o * o).sum() for o in outs.values())
    named = {
        **{f"{n}.{k}": p for n, m in (("c1", c1), ("c2", c2), ("t2", t2)) for k, p in m.named_parameters()},
        **t,
    }
    grads = torch.autograd.grad(loss, list(named.values()))
    return outs, dict(zip(named, grads))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_unbatched_inputs_and_one_element_tuples_match_torch(tmp_path, backend):
    path = tmp_path / "unbatched.net"
    path.write_text(UNBATCHED)
    model = netc.compile(path, backend=backend, precision="float64")
    rng = np.random.default_rng(0)
    feeds = {
        "a": rng.uniform(-1, 1, (3, 9)),
        "b": rng.uniform(-1, 1, (2, 7, 6)),
        "c": rng.uniform(-1, 1, (4, 5, 5)),
        "w": rng.uniform(-1, 1, (3, 2, 2)),
    }
    state = {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in model.state_dict().items()}
    tensors = {k: torch.from_numpy(v).requires_grad_() for k, v in feeds.items()}
    want, want_grads = torch_unbatched(state, tensors)
    got = model.forward(**feeds)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value.detach().numpy(), rtol=1e-9, atol=1e-12, err_msg=name)
    got_grads = model.gradients(inputs_wrt=list(feeds), **feeds)
    for name, value in want_grads.items():
        np.testing.assert_allclose(got_grads[name], value.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


# -- misuse: located errors, exit 2
# ----------------------------------------------------------------------------

MISUSES = {
    "output_padding at least the stride and the dilation": (
        "    up = ConvTranspose2d(3, 2, 3, stride = 2, output_padding = 2)\n    output x -> up\n",
        (
            "bad.net:4:10: error: ConvTranspose2d: output_padding 2x2 must be smaller than either the stride "
            "2x2 or the dilation 1x1 along each axis"
        ),
    ),
    "groups that do not divide the channels": (
        "    up = ConvTranspose2d(3, 4, 3, groups = 2)\n    output x -> up\n",
        "bad.net:4:10: error: ConvTranspose2d: in_channels (3) must be divisible by groups (2)",
    ),
    "an output size a transposed convolution cannot produce": (
        "    up = ConvTranspose2d(3, 2, 3, stride = 2)\n    output up(x, output_size = (20, 20))\n",
        (
            "bad.net:5:12: error: up (ConvTranspose2d): requested an output size of 20x20, but valid sizes "
            "range from 17x17 to 18x18 (for an input of 8x8)"
        ),
    ),
    "a transposed convolution whose output would be empty": (
        "    output conv_transpose2d(x, w, padding = 9)\n    input w: [3, 2, 3, 3]\n",
        (
            "bad.net:4:12: error: conv_transpose2d: input 8x8 with padding 9x9 gives an output of size "
            "-8x-8, which is not positive"
        ),
    ),
    "reflection padding as wide as the input": (
        "    pad = ReflectionPad2d(8)\n    output x -> pad\n",
        (
            "bad.net:5:17: error: pad (ReflectionPad2d): reflection padding of 8 must be smaller than "
            "dimension 2 of [N, 3, 8, 8] (the edge is not repeated)"
        ),
    ),
    "align_corners with nearest": (
        "    output interpolate(x, scale_factor = 2, align_corners = true)\n",
        (
            "bad.net:4:12: error: interpolate: align_corners can only be set with the interpolating modes "
            "linear, bilinear and trilinear"
        ),
    ),
    "bilinear on a 3-D input": (
        '    output interpolate(flatten(x, 2), size = 4, mode = "bilinear")\n',
        "bad.net:4:12: error: interpolate: mode 'bilinear' needs a 4-D input, got 3-D [N, 3, 64]",
    ),
    "both size and scale_factor": (
        "    up = Upsample(size = 4, scale_factor = 2)\n    output x -> up\n",
        "bad.net:5:17: error: up (Upsample): give exactly one of size or scale_factor",
    ),
    "pixel_shuffle of channels that do not divide": (
        "    output pixel_shuffle(x, 2)\n",
        (
            "bad.net:4:12: error: pixel_shuffle: the channels (3) must be divisible by upscale_factor "
            "squared (4)"
        ),
    ),
    "a learned slope per channel of the wrong count": (
        "    act = PReLU(4)\n    output x -> act\n",
        (
            "bad.net:5:17: error: act (PReLU): weight [4] must hold one value, or one per channel (3, axis "
            "1 of [N, 3, 8, 8])"
        ),
    ),
}


@pytest.mark.parametrize("name", list(MISUSES))
def test_misuse_is_a_located_error(tmp_path, capsys, name):
    body, message = MISUSES[name]
    path = tmp_path / "bad.net"
    path.write_text("network Bad {\n    input x: [N, 3, 8, 8]\n\n" + body + "}\n")
    code, _, err = run_cli(capsys, "check", path)
    assert code == 2, err
    assert err.splitlines()[0].endswith(message), err


def test_conv_transpose_function_checks_its_weight():
    from netc.compiler.context import LowerContext
    from netc.compiler.functional import FUNCTIONS
    from netc.compiler.ir import Graph
    from netc.compiler.shapes import TensorType

    graph = Graph("t")
    x = graph.add_leaf("input", "x", TensorType((2, 4, 5, 5)))
    w = graph.add_leaf("input", "w", TensorType((3, 2, 3, 3)))
    with pytest.raises(NetcError) as info:
        FUNCTIONS["conv_transpose2d"](LowerContext(graph, True), x, w)
    assert info.value.message == (
        "conv_transpose2d: weight [3, 2, 3, 3] expects 3 input channels, got 4 from a tensor of shape "
        "[2, 4, 5, 5]"
    )


# -- a repeat built of broadcasts (nearest upsampling's shape), fused
# --------------------------------------------


def _repeat_chain(shape_of_use: str):
    """x [2, 3] repeated twice along both axes as broadcast -> reshape -> broadcast: the outer broadcast reads
    the inner one, which only a stored buffer can give it (the fuser once inlined both, and the kernel read
    the inner broadcast's source as if it were the repeated tensor)."""
    from netc.compiler import build as B
    from netc.compiler.ir import Graph
    from netc.compiler.shapes import TensorType

    graph = Graph("repeat")
    x = graph.add_leaf("input", "x", TensorType((2, 3)))
    z = graph.add_leaf("input", "z", TensorType((4, 3, 2)))
    rows = B.broadcast_to(B.reshape(x, (2, 1, 3)), (2, 2, 3))
    both = B.broadcast_to(B.reshape(rows, (4, 3, 1)), (4, 3, 2))
    y = {"stored": B.reshape(both, (4, 6)), "scaled": B.reshape(both, (4, 6)) * 2.0, "multiplied": both * z}
    graph.outputs["y"] = y[shape_of_use]
    return graph, graph.outputs["y"]


@pytest.mark.parametrize("use", ["stored", "scaled", "multiplied"])
def test_a_repeat_made_of_two_broadcasts_runs_as_the_reference_does(use):
    from parity import run_on

    graph, y = _repeat_chain(use)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((2, 3)), "z": rng.standard_normal((4, 3, 2))}
    want = run_on("reference", graph, [y], feeds)[y.id]
    np.testing.assert_array_equal(run_on("cpu", graph, [y], feeds)[y.id], want)


# -- the autoencoder example (examples/digits/autoencoder.net)
# ---------------------------------------------------

DIGITS_DIR = Path(__file__).resolve().parent.parent / "examples" / "digits"


class DigitsAutoencoder(torch.nn.Module):
    """The PyTorch twin of examples/digits/autoencoder.net."""

    def __init__(self):
        super().__init__()
        self.enc1 = torch.nn.Conv2d(1, 16, 3, stride=2, padding=1)
        self.enc2 = torch.nn.Conv2d(16, 8, 3, stride=2, padding=1)
        self.dec1 = torch.nn.ConvTranspose2d(8, 16, 3, stride=2, padding=1, output_padding=1)
        self.up = torch.nn.Upsample(scale_factor=2, mode="bilinear")
        self.dec2 = torch.nn.Conv2d(16, 1, 3, padding=1)

    def forward(self, x):
        code = torch.relu(self.enc2(torch.relu(self.enc1(x))))
        reconstruction = self.dec2(self.up(torch.relu(self.dec1(code))))
        return {"reconstruction": reconstruction, "loss": F.mse_loss(reconstruction, x)}


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict:
    """train.npz and test.npz, written by the example's own script."""
    spec = importlib.util.spec_from_file_location("make_data", DIGITS_DIR / "make_data.py")
    make_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_data)
    train, test = make_data.make_digits(tmp_path_factory.mktemp("digits"))
    return {"train": train, "test": test}


def test_autoencoder_matches_its_twin(digits):
    """The example's loss and gradients against PyTorch's from the same weights, on real digits."""
    torch.manual_seed(0)
    twin = DigitsAutoencoder()
    model = netc.compile(DIGITS_DIR / "autoencoder.net", batch=16)
    model.load_state_dict(twin.state_dict())
    x = np.load(digits["train"])["x"][:16]
    got = model.gradients(x=x)
    out = twin(torch.from_numpy(x))
    out["loss"].backward()
    assert got["loss"] == pytest.approx(out["loss"].item(), rel=1e-5)
    for name, parameter in twin.named_parameters():
        np.testing.assert_allclose(got[name], parameter.grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)


def test_autoencoder_readme_commands(digits, tmp_path, capsys):
    """The README's four commands: train, eval (the loss it states), predict, and the drawing."""
    net, weights = DIGITS_DIR / "autoencoder.net", tmp_path / "autoencoder.safetensors"
    train = [
        "train",
        net,
        "--data",
        digits["train"],
        "--val-split",
        "0.1",
        "--optimizer",
        "adam",
        "--lr",
        "0.003",
        "--epochs",
        "30",
        "--backend",
        "cpu",
        "--checkpoint",
        weights,
        "--quiet",
    ]
    assert run_cli(capsys, *train)[0] == 0
    code, out, _ = run_cli(
        capsys, "eval", net, "--weights", weights, "--data", digits["test"], "--backend", "cpu"
    )
    assert code == 0
    assert float(re.search(r"loss ([\d.]+)", out).group(1)) < 0.11, out
    predictions, png = tmp_path / "reconstructions.npz", tmp_path / "reconstructions.png"
    predict = [
        "predict",
        net,
        "--weights",
        weights,
        "--data",
        digits["test"],
        "-o",
        predictions,
        "--backend",
        "cpu",
    ]
    assert run_cli(capsys, *predict)[0] == 0
    draw = [
        sys.executable,
        DIGITS_DIR / "draw_reconstructions.py",
        "--data",
        digits["test"],
        "--predictions",
        predictions,
        "-o",
        png,
    ]
    subprocess.run([str(a) for a in draw], check=True, capture_output=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
