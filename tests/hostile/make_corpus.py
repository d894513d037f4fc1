"""Writes the generated part of the hostile corpus: data files, checkpoints and .net files too long to write
by hand. The files are committed; run this again only to change them (python3 tests/hostile/make_corpus.py).

Each file is something a user (unlucky, or attacked) could hand netc. tests/test_hardening_cli.py runs every
command over all of them and asserts that none ends in a traceback.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
from safetensors.numpy import save, save_file

HERE = Path(__file__).resolve().parent
DATA, CHECKPOINTS = HERE / "data", HERE / "checkpoints"
SAMPLES = 12


def good_data() -> dict:
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((SAMPLES, 4)).astype(np.float32), "labels": rng.integers(0, 3, SAMPLES)}


def npy(array_header: dict, body: bytes = b"") -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, array_header)
    return out.getvalue() + body


def write_data() -> None:
    DATA.mkdir(exist_ok=True)
    good = good_data()
    np.savez(DATA / "labels_out_of_range.npz", x=good["x"], labels=good["labels"] + 5)
    np.savez(DATA / "negative_labels.npz", x=good["x"], labels=-good["labels"] - 1)
    np.savez(DATA / "nan.npz", x=np.full_like(good["x"], np.nan), labels=good["labels"])
    np.savez(DATA / "float_labels.npz", x=good["x"], labels=good["labels"].astype(np.float32))
    np.savez(DATA / "wrong_shape.npz", x=good["x"].reshape(SAMPLES, 2, 2), labels=good["labels"])
    np.savez(DATA / "uneven.npz", x=good["x"], labels=good["labels"][:5])
    np.savez(DATA / "no_samples.npz", x=good["x"][:0], labels=good["labels"][:0])
    np.savez(DATA / "strings.npz", x=np.array(["a", "b"]), labels=good["labels"][:2])
    np.savez(DATA / "overflowing.npz", x=np.full((SAMPLES, 4), 1e39), labels=good["labels"])
    np.savez(DATA / "scalars.npz", x=np.float32(3), labels=np.int64(1))
    np.savez_compressed(DATA / "zip_bomb.npz", **good, junk=np.zeros(50_000_000, np.uint8))
    np.save(DATA / "single_array.npz.npy", good["x"])
    (DATA / "single_array.npz.npy").rename(DATA / "single_array.npz")
    (DATA / "not_a_zip.npz").write_bytes(b"PK\x03\x04 this is not really a zip archive" * 10)
    with zipfile.ZipFile(DATA / "pickled_objects.npz", "w") as archive:
        archive.writestr("x.npy", npy({"descr": "|O", "fortran_order": False, "shape": (2,)}, b"\x80\x04N."))
        archive.writestr("labels.npy", npy({"descr": "<i8", "fortran_order": False, "shape": (0,)}))
    with zipfile.ZipFile(DATA / "huge_header.npz", "w") as archive:
        big = {"descr": "<f4", "fortran_order": False, "shape": (10**12, 4)}
        archive.writestr("x.npy", npy(big, b"\0" * 64))
        archive.writestr("labels.npy", npy({"descr": "<i8", "fortran_order": False, "shape": (10**12,)}))
    with zipfile.ZipFile(DATA / "short_body.npz", "w") as archive:
        short = {"descr": "<f4", "fortran_order": False, "shape": (SAMPLES, 4)}
        archive.writestr("x.npy", npy(short, b"\0" * 7))
        archive.writestr("labels.npy", npy({"descr": "<i8", "fortran_order": False, "shape": (SAMPLES,)}))


def tiny_weights() -> dict:
    rng = np.random.default_rng(1)
    shapes = {"fc1.weight": (8, 4), "fc1.bias": (8,), "bn.weight": (8,), "bn.bias": (8,),
              "bn.running_mean": (8,), "bn.running_var": (8,), "fc2.weight": (3, 8), "fc2.bias": (3,)}
    weights = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
    weights["bn.num_batches_tracked"] = np.array(0, np.int64)
    return weights


def checkpoint(path: Path, tensors: dict, **metadata) -> None:
    fields = {"format": "netc-checkpoint-1", "epoch": "1", "training": json.dumps({"batch": 0, "seed": 0}),
              **metadata}
    save_file(tensors, str(path), metadata={k: v for k, v in fields.items() if v is not None})


def write_checkpoints() -> None:
    CHECKPOINTS.mkdir(exist_ok=True)
    weights = tiny_weights()
    checkpoint(CHECKPOINTS / "training_is_a_list.safetensors", weights, training="[1, 2, 3]")
    checkpoint(CHECKPOINTS / "negative_epoch.safetensors", weights, epoch="-4")
    checkpoint(CHECKPOINTS / "epoch_not_a_number.safetensors", weights, epoch="one")
    checkpoint(CHECKPOINTS / "training_not_json.safetensors", weights, training="{{{")
    checkpoint(CHECKPOINTS / "bad_batch.safetensors", weights, training=json.dumps({"batch": -2}))
    checkpoint(CHECKPOINTS / "unknown_optimizer.safetensors", weights, optimizer="Lion",
               **{"optimizer.param_groups": "[]"})
    checkpoint(CHECKPOINTS / "bad_param_groups.safetensors", weights, optimizer="SGD",
               **{"optimizer.param_groups": json.dumps([{"lr": "fast", "momentum": [1]}])})
    checkpoint(CHECKPOINTS / "missing_training.safetensors", weights, training=None)
    wrong = dict(weights, **{"fc1.weight": np.zeros((800, 4), np.float32)})
    checkpoint(CHECKPOINTS / "wrong_shapes.safetensors", wrong)
    checkpoint(CHECKPOINTS / "strange_state_name.safetensors",
               dict(weights, **{"optimizer.state.nodot": np.zeros(3, np.float32)}), optimizer="SGD",
               **{"optimizer.param_groups": json.dumps([{"lr": 0.1}])})
    save_file({"unrelated": np.zeros(3, np.float32)}, str(CHECKPOINTS / "someone_elses.safetensors"))
    whole = save(weights, metadata={"format": "netc-checkpoint-1", "epoch": "1", "training": "{}"})
    (CHECKPOINTS / "truncated.safetensors").write_bytes(whole[: len(whole) // 2])
    (CHECKPOINTS / "huge_header_length.safetensors").write_bytes(struct.pack("<Q", 2**62) + b"{}")
    header = json.dumps({"fc1.weight": {"dtype": "F32", "shape": [10**9, 10**9], "data_offsets": [0, 16]}})
    (CHECKPOINTS / "claims_huge_tensor.safetensors").write_bytes(
        struct.pack("<Q", len(header)) + header.encode() + b"\0" * 16
    )
    (CHECKPOINTS / "not_safetensors.safetensors").write_bytes(b"\x80\x04\x95 a pickle, say")


def write_long_sources() -> None:
    stages = " -> ".join(["relu"] * 2000)
    (HERE / "deep_pipeline.net").write_text(
        f"network DeepPipeline {{\n    input x: [N, 4]\n    output x -> {stages}\n}}\n"
    )
    terms = " + ".join(["x"] * 2000)
    (HERE / "deep_sum.net").write_text(f"network DeepSum {{\n    input x: [N, 4]\n    output {terms}\n}}\n")
    nested = "(" * 3000 + "x" + ")" * 3000
    (HERE / "deep_parentheses.net").write_text(
        f"network DeepParentheses {{\n    input x: [N, 4]\n    output {nested}\n}}\n"
    )


if __name__ == "__main__":
    write_data()
    write_checkpoints()
    write_long_sources()
