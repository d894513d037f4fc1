"""Draw test digits beside the autoencoder's reconstructions of them, as a PNG: originals on the top row of
each pair of rows, reconstructions below.

    netc predict examples/digits/autoencoder.net --weights autoencoder.safetensors \\
        --data examples/digits/test.npz -o reconstructions.npz --backend cpu
    python3 examples/digits/draw_reconstructions.py --data examples/digits/test.npz \\
        --predictions reconstructions.npz -o reconstructions.png

The images are drawn in grey levels (the standardisation make_data.py applied is undone), and the mean squared
error of each reconstruction, in standardised units as the loss measures it, is printed under it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_data import pixel_statistics, split_digits


def draw(
    originals: np.ndarray, reconstructions: np.ndarray, path: Path, columns: int = 12, rows: int = 3
) -> None:
    mean, std = pixel_statistics(split_digits()[0])
    grey = lambda x: np.clip(x * std + mean, 0, 16)[0]
    figure, axes = plt.subplots(2 * rows, columns, figsize=(columns * 0.9, rows * 2 * 1.05))
    for k in range(rows * columns):
        row, column = 2 * (k // columns), k % columns
        error = float(np.mean((reconstructions[k] - originals[k]) ** 2))
        for offset, image in ((0, originals[k]), (1, reconstructions[k])):
            axis = axes[row + offset, column]
            axis.imshow(grey(image), cmap="gray_r", vmin=0, vmax=16)
            axis.set_xticks([]), axis.set_yticks([])
        axes[row + 1, column].set_xlabel(f"{error:.3f}", fontsize=7)
    for row in range(rows):
        axes[2 * row, 0].set_ylabel("input", fontsize=8)
        axes[2 * row + 1, 0].set_ylabel("output", fontsize=8)
    figure.suptitle(
        "digits (top) and their reconstructions (below, with their mean squared error)", fontsize=9
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the images, as make_data.py wrote them")
    parser.add_argument("--predictions", type=Path, required=True, help="netc predict's output for them")
    parser.add_argument("--output", "-o", type=Path, default=Path("reconstructions.png"))
    args = parser.parse_args()
    originals = np.load(args.data, allow_pickle=False)["x"]
    reconstructions = np.load(args.predictions, allow_pickle=False)["reconstruction"]
    draw(originals, reconstructions, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
