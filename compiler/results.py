"""Several results of one layer or function: LSTM's (output, h_n, c_n), a block with `output a, b`.

A tuple assignment binds each of them: `out, h_n, c_n = lstm(x)`. Everywhere a single value is expected (a
pipeline stage `x -> lstm -> fc`, an argument, a one-name assignment, an output) the first result stands for
them all, as the output sequence of a recurrent layer is what flows on in PyTorch's usual `out, _ = rnn(x)`.
"""

from __future__ import annotations


class Results(tuple):
    """The results of one application, in order, each with a name for messages (`output`, `h_n`, `c_n`)."""

    names: tuple

    def __new__(cls, values, names=None):
        results = super().__new__(cls, values)
        if names is None:
            names = [f"result {i}" for i in range(len(results))]
        results.names = tuple(names)
        if len(results.names) != len(results):
            raise ValueError(f"{len(results)} results but {len(results.names)} names")
        return results

    def describe(self) -> str:
        return f"{len(self)} results ({', '.join(self.names)})"


def first_result(value):
    """The value that stands for `value` where one is expected: the first of several results."""
    return value[0] if isinstance(value, Results) else value
