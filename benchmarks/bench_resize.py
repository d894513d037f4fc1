"""Decoders' layers against PyTorch: transposed convolutions, upsampling (nearest and bilinear, each before a
convolution), a convolution with reflect padding, and the digits autoencoder; a training step and inference,
netc's cpu backend against PyTorch eager, side by side in one run.

    python3 benchmarks/bench_resize.py            # batch 64, 32 channels of 16x16 (the autoencoder: 8x8 digits)
    python3 benchmarks/bench_resize.py --quick    # small sizes, few rounds: checks that it runs

Each network ends in an MSE loss against a target of its output's shape; the step is SGD with momentum.
Timings are medians of rounds that alternate the contestants (bench.interleaved_seconds); ratios are
PyTorch's time over netc's, above 1 when netc is faster. Also printed: compile time and the training step's
kernel count. Asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # two OpenMP runtimes in one process: see bench.py
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))
import netc
from bench import interleaved_seconds, torch_step
from netc.compiler.optim import SGD
from test_resize_pad_transpose import DigitsAutoencoder

# name -> (the layer in .net, its torch twin (channels -> module), output size / input size)
LAYERS = {
    "ConvTranspose2d k4 s2": ("ConvTranspose2d({c}, {c}, 4, stride = 2, padding = 1)",
                              lambda c: nn.ConvTranspose2d(c, c, 4, stride=2, padding=1), 2),
    "Upsample nearest x2 + Conv2d": ("Sequential(Upsample(scale_factor = 2), Conv2d({c}, {c}, 3, padding = 1))",
                                     lambda c: nn.Sequential(nn.Upsample(scale_factor=2),
                                                             nn.Conv2d(c, c, 3, padding=1)), 2),
    "Upsample bilinear x2 + Conv2d": (
        'Sequential(Upsample(scale_factor = 2, mode = "bilinear"), Conv2d({c}, {c}, 3, padding = 1))',
        lambda c: nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(c, c, 3, padding=1)),
        2,
    ),
    "Conv2d reflect padding": ('Conv2d({c}, {c}, 3, padding = 1, padding_mode = "reflect")',
                               lambda c: nn.Conv2d(c, c, 3, padding=1, padding_mode="reflect"), 1),
}
NETWORK = """
network Decoder {{
    input x: [N, {c}, {s}, {s}]
    input target: [N, {c}, {o}, {o}]
    layer = {layer}
    y = x -> layer
    loss = mse_loss(y, target)
    output y
    minimize loss
}}
"""


class Twin(nn.Module):
    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x, target):
        y = self.layer(x)
        return {"y": y, "loss": F.mse_loss(y, target)}


class AutoencoderTwin(DigitsAutoencoder):
    def forward(self, x):
        out = super().forward(x)
        return {"reconstruction": out["reconstruction"], "loss": out["loss"]}


def bench(name: str, network, twin: nn.Module, arrays: dict, batch: int, rounds: int) -> dict:
    tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
    start = time.perf_counter()
    model = netc.compile(network, batch=batch, backend="cpu")
    model.load_state_dict(twin.state_dict())
    trainer = model.trainer(SGD(lr=0.01, momentum=0.9))
    trainer.step(**arrays)
    row = {"net": name, "compile_s": time.perf_counter() - start}
    row["kernels"] = len(trainer.compiled.kernels)
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9)
    row.update(interleaved_seconds({"netc_train": lambda: trainer.step(**arrays),
                                    "eager_train": torch_step(twin.train(), tensors, optimizer)}, rounds))

    def eager_infer():
        with torch.no_grad():
            twin(**tensors)

    model.eval()
    row.update(interleaved_seconds({"netc_infer": lambda: model.forward(**arrays), "eager_infer": eager_infer},
                                   rounds))
    return row


def cases(batch: int, channels: int, size: int):
    """(name, network, twin, arrays) of each layer, then the autoencoder."""
    rng = np.random.default_rng(0)
    for name, (layer, make_twin, scale) in LAYERS.items():
        text = NETWORK.format(c=channels, s=size, o=size * scale, layer=layer.format(c=channels))
        arrays = {"x": rng.standard_normal((batch, channels, size, size)).astype(np.float32),
                  "target": rng.standard_normal((batch, channels, size * scale, size * scale)).astype(np.float32)}
        torch.manual_seed(0)
        twin = Twin(make_twin(channels))
        yield name, netc.load("decoder.net", text=text), twin, arrays
    torch.manual_seed(0)
    arrays = {"x": rng.standard_normal((batch, 1, 8, 8)).astype(np.float32)}
    yield "digits autoencoder", ROOT / "examples" / "digits" / "autoencoder.net", AutoencoderTwin(), arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few rounds")
    args = parser.parse_args()
    batch, channels, size, rounds = (4, 4, 8, 3) if args.quick else (64, 32, 16, 21)
    print(f"batch {batch}, {channels} channels of {size}x{size}")
    print("| net | kernels | compile s | train ms netc | eager | ratio | infer ms netc | eager | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, network, twin, arrays in cases(batch, channels, size):
        r = bench(name, network, twin, arrays, batch, rounds)
        print(f"| {name} | {r['kernels']} | {r['compile_s']:.1f} "
              f"| {r['netc_train'] * 1e3:.2f} | {r['eager_train'] * 1e3:.2f} "
              f"| {r['eager_train'] / r['netc_train']:.2f} | {r['netc_infer'] * 1e3:.2f} "
              f"| {r['eager_infer'] * 1e3:.2f} | {r['eager_infer'] / r['netc_infer']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
