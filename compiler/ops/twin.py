"""A lazy handle on PyTorch for the ops' twins.

Each op names its PyTorch twin next to its NumPy reference (`torch=torch.exp`), but netc never needs torch to
compile or run a network, and importing it costs seconds. `torch.exp` here is therefore a lazy reference that
imports the real module on first call, which only the parity tests make. Once torch is imported, attributes
resolve to the real objects directly.
"""

from __future__ import annotations

import importlib
import sys


class _LazyAttr:
    def __init__(self, module: str, path: str):
        self._module, self._path = module, path

    def resolve(self):
        obj = importlib.import_module(self._module)
        for part in self._path.split("."):
            obj = getattr(obj, part)
        return obj

    def __getattr__(self, attr):
        return _LazyAttr(self._module, f"{self._path}.{attr}")

    def __call__(self, *args, **kwargs):
        args = [a.resolve() if isinstance(a, _LazyAttr) else a for a in args]
        kwargs = {k: v.resolve() if isinstance(v, _LazyAttr) else v for k, v in kwargs.items()}
        return self.resolve()(*args, **kwargs)


class _LazyModule:
    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        if self._name in sys.modules:
            return getattr(sys.modules[self._name], attr)
        return _LazyAttr(self._name, attr)


torch = _LazyModule("torch")
F = _LazyModule("torch.nn.functional")
