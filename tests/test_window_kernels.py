"""The cpu backend's unfold and fold kernels (convolutions, pooling, and their gradients) against the reference,
on the edge cases of their window ranges: padding wider than a window reaches (windows that read nothing but
padding), strides larger than the kernel, dilation, one-element axes, and 1-, 2- and 3-d inputs.

The kernels fill and copy each kernel offset's windows as one range along the last axis (templates/unfold.j2,
fold.j2), so an off-by-one in that range would show here as a wrong edge column.
"""

from __future__ import annotations

import numpy as np
import pytest
from parity import float64_pair

ATOL = 1e-10  # float64 on both sides: only summation order differs

CASES = {
    "conv1d_wide_padding": ("[N, 2, 5]", "Conv1d(2, 3, 2, stride = 3, padding = 3, dilation = 2)"),
    "conv1d_stride_over_kernel": ("[N, 2, 11]", "Conv1d(2, 2, 2, stride = 4, padding = 1)"),
    "conv2d_dilated": ("[N, 3, 7, 6]", "Conv2d(3, 4, 3, stride = (2, 1), padding = (2, 3), dilation = (1, 2))"),
    "conv2d_one_wide": ("[N, 2, 5, 1]", "Conv2d(2, 3, (3, 1), padding = (1, 2))"),
    "conv2d_groups": ("[N, 4, 6, 6]", "Conv2d(4, 4, 3, stride = 2, padding = 2, groups = 2)"),
    "conv3d": ("[N, 2, 4, 5, 3]", "Conv3d(2, 3, (2, 3, 2), stride = (1, 2, 2), padding = (1, 1, 2))"),
    "maxpool2d_padded": ("[N, 2, 7, 7]", "MaxPool2d(3, stride = 2, padding = 1)"),
    "maxpool1d_dilated": ("[N, 3, 9]", "MaxPool1d(2, stride = 3, padding = 1, dilation = 3)"),
    "avgpool2d_padded": ("[N, 2, 6, 5]", "AvgPool2d(3, stride = 2, padding = 1)"),
    "avgpool3d": ("[N, 1, 5, 4, 6]", "AvgPool3d(2, stride = (1, 2, 3))"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_windows_on_the_cpu_backend_match_the_reference(tmp_path, name):
    shape, layer = CASES[name]
    path = tmp_path / f"{name}.net"
    path.write_text(
        f"network W {{\n    input x: {shape}\n    layer = {layer}\n"
        f"    input w: [N, 1]\n    y = x -> layer\n    loss = sum(y * y) * 0.5 + sum(w)\n"
        f"    output y\n    minimize loss\n}}\n"
    )
    batch = 3
    ref, cpu = float64_pair(path, batch)
    rng = np.random.default_rng(1)
    dims = [int(d) for d in shape.strip("[]").split(", ")[1:]]
    feeds = {"x": rng.standard_normal([batch, *dims]), "w": rng.standard_normal([batch, 1])}
    np.testing.assert_allclose(cpu.forward(**feeds)["y"], ref.forward(**feeds)["y"], atol=ATOL, rtol=1e-10)
    want = ref.gradients(inputs_wrt=["x"], **feeds)
    got = cpu.gradients(inputs_wrt=["x"], **feeds)
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], atol=ATOL, rtol=1e-10, err_msg=key)
