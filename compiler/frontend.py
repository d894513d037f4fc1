"""The front end's entry point: a `.net` file in, a checked `Network` out.

`load` parses the file and the files it imports, picks the network, and lowers it once with its symbolic
dims (the batch size `N` stays `N`), which checks every shape and yields the IR that `netc ir` prints.
Compiling for a batch size lowers the same definition again with the symbols bound, in train or eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import ast
from .blocks import BlockDef
from .errors import NetcError, did_you_mean
from .ir import Graph, verify
from .lower import lower_network
from .parse import parse, parse_file
from .passes.simplify import simplify


@dataclass
class Network:
    """A parsed and checked network: its definition, the blocks it can use, and its symbolic IR."""

    name: str
    definition: ast.Definition
    blocks: dict
    graph: Graph  # lowered with symbolic dims, in train mode
    path: str
    _graphs: dict = field(default_factory=dict, repr=False)

    @property
    def symbols(self) -> tuple:
        return self.graph.symbols

    def lower(self, bindings: dict, training: bool) -> Graph:
        """The IR for concrete sizes and a mode, simplified (layers written independently repeat work:
        BatchNorm's mean for its statistics and for its running average); cached, since a model switches
        modes often."""
        key = (tuple(sorted(bindings.items())), training)
        if key not in self._graphs:
            graph = lower_network(self.definition, self.blocks, bindings=bindings, training=training)
            verify(graph)
            self._graphs[key] = simplify(graph)
        return self._graphs[key]


def load(source: str | Path, network: str | None = None, *, text: str | None = None) -> Network:
    """Parse and check a `.net` file (or `text`, named `source` in messages)."""
    path = str(source)
    module = parse(text, path) if text is not None else parse_file(path)
    blocks: dict = {}
    networks: dict = {}
    _collect(module, Path(path).resolve().parent, blocks, networks, seen={str(Path(path).resolve())})
    definition = _pick_network(networks, network, path)
    try:
        graph = lower_network(definition, blocks, bindings={}, training=True)
    except RecursionError:
        raise NetcError(f"{path}: the network is nested too deeply (a block that applies itself?)") from None
    verify(graph)
    return Network(definition.name, definition, blocks, graph, path)


def _collect(module: ast.Module, directory: Path, blocks: dict, networks: dict, seen: set) -> None:
    """Gather blocks (from imports first) and networks; an import brings in another file's blocks."""
    for imp in module.imports:
        target = (directory / imp.path).resolve()
        if str(target) in seen:
            continue  # imported already (or an import cycle): its blocks are in scope once
        seen.add(str(target))
        if not target.is_file():
            raise NetcError(f"cannot import '{imp.path}': no such file {target}", imp.loc)
        _collect(parse_file(str(target)), target.parent, blocks, {}, seen)
    for definition in module.definitions:
        table = blocks if definition.kind == "block" else networks
        if definition.name in blocks or definition.name in networks:
            raise NetcError(f"'{definition.name}' is defined twice", definition.loc)
        table[definition.name] = BlockDef(definition, blocks) if definition.kind == "block" else definition


def _pick_network(networks: dict, name: str | None, path: str) -> ast.Definition:
    if name is not None:
        if name not in networks:
            raise NetcError(f"{path} has no network '{name}'", hint=did_you_mean(name, networks))
        return networks[name]
    if len(networks) == 1:
        return next(iter(networks.values()))
    if not networks:
        raise NetcError(f"{path} defines no network (only blocks); add 'network Name {{ ... }}'")
    raise NetcError(f"{path} defines several networks ({', '.join(networks)}); choose one by name")
