"""Tuple assignment: `out, h_n = gru(x)` binds each result of a layer, function or block that gives several;
anywhere else the first result stands for them all (compiler/results.py)."""

from __future__ import annotations

import numpy as np
import pytest

import netc
from netc import NetcError
from netc.compiler import ast
from netc.compiler.parse import parse

TWO = "block Two {\n    input x\n    a = relu(x)\n    b = x * 2\n    output a, b\n}\n"


def run(body: str, x: np.ndarray) -> dict:
    net = netc.load("t.net", text=TWO + "network T {\n    input x: [N, 3]\n" + body + "}\n")
    return netc.compile(net, batch=len(x)).forward(x=x)


def error(body: str) -> str:
    with pytest.raises(NetcError) as err:
        netc.load("bad.net", text=TWO + "network Bad {\n    input x: [N, 3]\n" + body + "}\n")
    return str(err.value)


def test_a_tuple_assignment_parses_into_its_names_and_value():
    (stmt,) = parse("network A {\n    out, h_n,c_n = x -> lstm\n}").definitions[0].body
    assert isinstance(stmt, ast.Unpack) and stmt.names == ["out", "h_n", "c_n"]
    assert isinstance(stmt.value, ast.Pipe) and (stmt.loc.line, stmt.loc.col) == (2, 5)


def test_each_name_binds_one_result_and_elsewhere_the_first_flows_on():
    x = np.array([[-1.0, 2.0, -3.0], [4.0, -5.0, 6.0]], np.float32)
    two = "    two = Two()\n"
    got = run(two + "    a, b = two(x)\n    output a, b\n", x)
    assert np.array_equal(got["a"], np.maximum(x, 0)) and np.array_equal(got["b"], 2 * x)
    piped = run(two + "    p, q = x -> two\n    y = x -> two -> sigmoid\n    z = two(x)\n    output p, q, y, z\n", x)
    assert np.array_equal(piped["q"], 2 * x) and np.allclose(piped["y"], 1 / (1 + np.exp(-np.maximum(x, 0))), rtol=1e-6)
    assert np.array_equal(piped["z"], np.maximum(x, 0))
    hyper = run("    k, m = (2, 3)\n    output x * k + m\n", x)
    assert np.array_equal(hyper["output"], x * 2 + 3)


@pytest.mark.parametrize("body, expected", [
    ("    fc = Linear(3, 3)\n    a, b = fc(x)\n    output a\n",
     "bad.net:10:5: error: 2 names (a, b) for fc(...), which gives one result\n"
     "        a, b = fc(x)\n        ^^^^^^^^^^^^\n    hint: bind 1 name"),
    ("    two = Two()\n    a, b, c = x -> relu -> two\n    output a\n",
     "bad.net:10:5: error: 3 names (a, b, c) for 'two', which gives 2 results (a, b)"),
    ("    a, b = x\n    output a\n", "2 names (a, b) for 'x', which gives one result"),
    ("    a, b = (1, 2, 3)\n    output x\n", "2 names (a, b) for the right side, which gives 3 values"),
    ("    a, b = (Linear(3, 3), 1)\n    output x\n",
     "bad.net:9:5: error: 'a' would be bound to the layer Linear; bind a layer on a line of its own"),
])
def test_a_wrong_number_of_names_is_a_located_error(body, expected):
    assert expected in error(body)


def test_in_a_sequential_the_first_result_flows_on():
    """Sequential(LSTM(...), Linear(...)) feeds the LSTM's output sequence to the Linear, as `x -> lstm -> fc`
    does."""
    text = """network S {
    input x: [N, 5, 3]
    seq = Sequential(LSTM(3, 4, batch_first = true), Linear(4, 2))
    lstm = LSTM(3, 4, batch_first = true)
    fc = Linear(4, 2)
    output x -> seq, x -> lstm -> fc
}
"""
    model = netc.compile(netc.load("s.net", text=text), batch=2)
    state = model.state_dict()
    model.load_state_dict({**state, **{k.replace("seq.0.", "lstm.").replace("seq.1.", "fc."): v
                                        for k, v in state.items() if k.startswith("seq.")}})
    got = model.forward(x=np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32))
    assert got["output"].shape == (2, 5, 2)
    np.testing.assert_array_equal(got["output"], got["output1"])
