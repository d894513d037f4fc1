"""compiler/dtypes.py, the one table of number types: each precision and IR dtype's C type, NumPy type and
size agree with one another, and the IR's float dtype follows the precision."""

from __future__ import annotations

import numpy as np
import pytest

from netc.compiler import dtypes
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
from netc.compiler.errors import NetcError
from netc.compiler.ir import Graph
from netc.compiler.shapes import TensorType
from netc.runtime import model as model_module
from netc.runtime.model import check_precision, check_sizes


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
    assert [reference_type(d) for d in IR_DTYPES] == [np.float64, np.float64, np.int64, np.float64]
    assert c_type("bf16", "float") == c_type("bf16", "double") == "netc_bf16" and item_bytes("bf16", "float") == 2
    assert set(FLOAT_DTYPES) < set(IR_DTYPES)


def _graph_of(dtype: str, elements: int) -> Graph:
    graph = Graph("Sized")
    x = graph.add_leaf("input", "x", TensorType((elements,), "f32"))
    x.type = TensorType((elements,), dtype)  # past the leaf's check, which knows only the table's dtypes
    return graph


@pytest.mark.parametrize("float_type", [np.float32, np.float64])
def test_the_memory_check_counts_each_element_at_its_dtypes_size(monkeypatch, float_type):
    """runtime/model.check_sizes asks this table for an element's bytes: a dtype of another size than the float
    and than 8 (a 2-byte one, added here as the table would gain it) is counted at its own size, neither
    loosened to a smaller one nor taken for the float; a dtype the table lacks is an error, not a guess."""
    monkeypatch.setitem(dtypes._FIXED, "f16", dtypes.NumberType("_Float16", np.float16, 2))
    monkeypatch.setattr(model_module, "available_bytes", lambda: 800)
    check_sizes(_graph_of("f16", 400), float_type)  # 800 bytes: fits
    with pytest.raises(NetcError, match=r"Sized's 'x' of shape \[401\] needs 802 bytes"):
        check_sizes(_graph_of("f16", 401), float_type)
    for dtype in ("f64", "i64"):  # 8 bytes whatever the float
        check_sizes(_graph_of(dtype, 100), float_type)
        with pytest.raises(NetcError, match="needs 808 bytes"):
            check_sizes(_graph_of(dtype, 101), float_type)
    check_sizes(_graph_of("f32", 800 // np.dtype(float_type).itemsize), float_type)
    with pytest.raises(NetcError):
        check_sizes(_graph_of("f32", 800 // np.dtype(float_type).itemsize + 1), float_type)
    monkeypatch.delitem(dtypes._FIXED, "f16")
    with pytest.raises(KeyError):
        check_sizes(_graph_of("f16", 1), float_type)


def test_a_precision_the_backend_lacks_is_refused_naming_those_it_has():
    """The cuda backend's list names tf32 too (it listed the host's alone); the cpu's refuses tf32 with a
    hint."""
    check_precision("tf32", "cuda")
    with pytest.raises(NetcError, match="one of float32, float64, tf32, bf16, got 'half'"):
        check_precision("half", "cuda")
    with pytest.raises(NetcError, match="one of float32, float64, bf16, got 'tf32'") as caught:
        check_precision("tf32", "cpu")
    assert "backend='cuda'" in caught.value.hint
