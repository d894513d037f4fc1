"""netc's unrolled LSTM and GRU against PyTorch's (cuDNN-style fused) ones: a training step of a sequence
classifier, and inference, side by side in one run.

    python3 benchmarks/bench_recurrent.py            # batch 64, sequences of 8 and 32, hidden 64 and 256
    python3 benchmarks/bench_recurrent.py --quick    # small sizes, few rounds: checks that it runs

The network reads [N, T, 32] (batch first) through a one-layer recurrence and classifies its last hidden
state into 10 classes with cross-entropy; the step is SGD with momentum. Timings are medians of rounds that
alternate the contestants (bench.interleaved_seconds); ratios are PyTorch's time over netc's, above 1 when
netc is faster. Also printed: compile time and the training step's kernel count. Asserts nothing about speed.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import netc
from bench import interleaved_seconds, torch_step
from netc.compiler.optim import SGD

FEATURES, CLASSES = 32, 10
NETWORK = """
network Sequence {{
    input x: [N, {T}, {features}]
    input labels: i64[N]
    rnn = {kind}({features}, {hidden}, batch_first = true)
    fc = Linear({hidden}, {classes})
    out, h_n{cell} = rnn(x)
    logits = h_n -> transpose(0, 1) -> flatten -> fc
    loss = cross_entropy(logits, labels)
    output logits
    minimize loss
}}
"""


class Twin(torch.nn.Module):
    def __init__(self, kind: str, hidden: int):
        super().__init__()
        self.rnn = getattr(torch.nn, kind)(FEATURES, hidden, batch_first=True)
        self.fc = torch.nn.Linear(hidden, CLASSES)

    def forward(self, x, labels):
        _, state = self.rnn(x)
        h_n = state[0] if isinstance(state, tuple) else state
        logits = self.fc(torch.flatten(h_n.transpose(0, 1), 1))
        return {"logits": logits, "loss": F.cross_entropy(logits, labels)}


def bench(kind: str, batch: int, T: int, hidden: int, rounds: int) -> dict:
    rng = np.random.default_rng(0)
    arrays = {"x": rng.standard_normal((batch, T, FEATURES)).astype(np.float32),
              "labels": rng.integers(0, CLASSES, batch)}
    tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
    torch.manual_seed(0)
    twin = Twin(kind, hidden)
    text = NETWORK.format(T=T, features=FEATURES, hidden=hidden, classes=CLASSES, kind=kind,
                          cell=", c_n" if kind == "LSTM" else "")
    start = time.perf_counter()
    model = netc.compile(netc.load("sequence.net", text=text), batch=batch, backend="cpu")
    model.load_state_dict(twin.state_dict())
    trainer = model.trainer(SGD(lr=0.01, momentum=0.9))
    trainer.step(**arrays)
    row = {"net": kind, "batch": batch, "T": T, "hidden": hidden, "compile_s": time.perf_counter() - start}
    row["kernels"] = len(trainer.compiled.kernels)
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9)
    row.update(interleaved_seconds({"netc_train": lambda: trainer.step(**arrays),
                                    "eager_train": torch_step(twin.train(), tensors, optimizer)}, rounds))

    def eager_infer():
        with torch.no_grad():
            twin(**tensors)

    model.eval()
    inference = {"netc_infer": lambda: model.forward(**arrays), "eager_infer": eager_infer}
    row.update(interleaved_seconds(inference, rounds))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few rounds")
    args = parser.parse_args()
    sizes = [(4, 4, 16)] if args.quick else [(64, 8, 64), (64, 32, 64), (64, 32, 256)]
    rounds = 3 if args.quick else 21
    print("| net | batch | T | hidden | kernels | compile s | train ms netc | eager | ratio | infer ms netc "
          "| eager | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for kind in ("LSTM", "GRU"):
        for batch, T, hidden in sizes:
            r = bench(kind, batch, T, hidden, rounds)
            print(f"| {kind} | {batch} | {T} | {hidden} | {r['kernels']} | {r['compile_s']:.1f} "
                  f"| {r['netc_train'] * 1e3:.2f} | {r['eager_train'] * 1e3:.2f} "
                  f"| {r['eager_train'] / r['netc_train']:.2f} | {r['netc_infer'] * 1e3:.2f} "
                  f"| {r['eager_infer'] * 1e3:.2f} | {r['eager_infer'] / r['netc_infer']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
