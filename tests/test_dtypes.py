"""compiler/dtypes.py, the one table of number types: each precision and IR dtype's C type, NumPy type and
size agree with one another, and the IR's float dtype follows the precision."""

from __future__ import annotations

import numpy as np
import pytest

from netc.compiler.dtypes import (
    C_TYPES,
    FLOAT_DTYPES,
    IR_DTYPES,
    PRECISIONS,
    c_type,
    item_bytes,
    numpy_type,
    reference_type,
)


@pytest.mark.parametrize("precision", sorted(PRECISIONS))
def test_every_ir_dtype_has_one_c_type_numpy_type_and_size_in_every_precision(precision):
    float_type = PRECISIONS[precision]
    for dtype in IR_DTYPES:
        c = c_type(dtype, float_type.c)
        assert C_TYPES[c].numpy == numpy_type(dtype, float_type.numpy)
        assert item_bytes(dtype, float_type.c) == np.dtype(numpy_type(dtype, float_type.numpy)).itemsize


def test_f32_follows_the_precision_and_the_others_do_not():
    assert [c_type("f32", PRECISIONS[p].c) for p in ("float32", "float64", "tf32")] == ["float", "double", "float"]
    assert {c_type(d, "float") for d in ("f64", "i64")} == {c_type(d, "double") for d in ("f64", "i64")}
    assert [reference_type(d) for d in IR_DTYPES] == [np.float64, np.float64, np.int64]
    assert set(FLOAT_DTYPES) < set(IR_DTYPES)
