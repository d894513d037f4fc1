"""Write scikit-learn's handwritten digits (1,797 images of 8x8 pixels, shipped with it: no download) as
train.npz and test.npz, arrays named as the inputs of mlp.net and cnn.net: x f32[N, 1, 8, 8], labels i64[N].

    python3 examples/digits/make_data.py [OUTPUT_FOLDER]     # default: beside this script

A fixed, stratified split holds out a quarter of the images for testing. Each pixel is standardised with the
training images' mean and standard deviation (plus one grey level, so the border pixels that are blank in
every image stay finite).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SPLIT_SEED = 0
TEST_FRACTION = 0.25


def split_digits() -> tuple:
    """(x_train, x_test, y_train, y_test): the raw images [samples, 1, 8, 8] (grey levels 0 to 16) and
    labels."""
    digits = load_digits()
    images = digits.images.astype(np.float32)[:, None]  # [samples, 1 channel, 8, 8]: the layout Conv2d takes
    labels = digits.target.astype(np.int64)
    return train_test_split(images, labels, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels)


def pixel_statistics(x_train: np.ndarray) -> tuple:
    """The mean and scale each pixel is standardised with (undo it with x * std + mean to draw an image)."""
    return x_train.mean(axis=0), x_train.std(axis=0) + 1.0  # pixel values run from 0 to 16


def make_digits(folder: Path) -> tuple[Path, Path]:
    x_train, x_test, y_train, y_test = split_digits()
    mean, std = pixel_statistics(x_train)
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "train.npz", folder / "test.npz"
    for path, x, y in zip(paths, (x_train, x_test), (y_train, y_test)):
        np.savez(path, x=(x - mean) / std, labels=y)
    return paths


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    for path in make_digits(folder):
        print(f"wrote {path}")
