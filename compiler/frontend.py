"""The front end's entry point: a `.net` file in, a checked `Network` out.

`load` parses the file and the files it imports, picks the network, and lowers it once with its symbolic
dims (the batch size `N` stays `N`), which checks every shape and yields the IR that `netc ir` prints.
Compiling for a batch size lowers the same definition again with the symbols bound, in train or eval mode.

An `import` reads `.net` files only, from the importing file's folder tree, or from a folder named on the
import path (`load(..., import_path=[...])`, `--import-path` on the command line, $NETC_PATH): a `.net` file
is trusted, so its errors quote it, but `import "/proc/self/environ"` must not print the environment.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import ast
from .blocks import BlockDef
from .errors import NetcError, did_you_mean
from .ir import Graph, verify
from .lower import is_builtin, lower_network
from .parse import parse, read_source
from .passes.simplify import simplify
from .step_cache import load_entry, lowered_key, save_entry


@dataclass
class Network:
    """A parsed and checked network: its definition, the blocks it can use, and its symbolic IR."""

    name: str
    definition: ast.Definition
    blocks: dict
    graph: Graph  # lowered with symbolic dims, in train mode
    path: str
    _graphs: dict = field(default_factory=dict, repr=False)
    dims: dict = field(default_factory=dict)  # symbols bound when loading (load(..., dims=...)), by name
    # What its compiled steps depend on besides their sizes: the SHA-256 of its source files (the file and
    # every file it imports, by path and text), its name and `dims`; the step cache's key (step_cache.py).
    fingerprint: str | None = None

    @property
    def symbols(self) -> tuple:
        """The symbols still to bind when compiling (the batch size's, and any not bound by `dims`)."""
        return self.graph.symbols

    def lower(self, bindings: dict, training: bool, sync_ranks: int = 1) -> Graph:
        """The IR for concrete sizes and a mode, simplified (layers written independently repeat work:
        BatchNorm's mean for its statistics and for its running average); cached, since a model switches
        modes often. `sync_ranks` > 1: BatchNorm's training statistics are those of that many ranks' batches
        together (SyncBatchNorm; layers/norm.py)."""
        bindings = {**self.dims, **bindings}
        key = (tuple(sorted(bindings.items())), training, sync_ranks)
        if key not in self._graphs:
            self._graphs[key] = self._lowered(bindings, training, sync_ranks)
        return self._graphs[key]

    def _lowered(self, bindings: dict, training: bool, sync_ranks: int) -> Graph:
        return lowered(self.definition, self.blocks, self.fingerprint, bindings, training, sync_ranks)


def lowered(
    definition, blocks: dict, fingerprint: str | None, bindings: dict, training: bool, sync_ranks: int = 1,
    simplified: bool = True,
) -> Graph:
    """The network lowered, checked and (if `simplified`) simplified, or the same from the step cache
    (compiler/step_cache.py) where its `fingerprint` is there."""
    cache_key = lowered_key(fingerprint, bindings, training, sync_ranks, simplified)
    graph = load_entry(cache_key, "graph") if cache_key is not None else None
    if isinstance(graph, Graph):
        return graph
    graph = lower_network(definition, blocks, bindings=bindings, training=training, sync_ranks=sync_ranks)
    verify(graph)
    if simplified:
        graph = simplify(graph)
    if cache_key is not None:
        save_entry(cache_key, graph, "graph")
    return graph


def load(
    source: str | Path, network: str | None = None, *, text: str | None = None, import_path=None,
    dims: dict | None = None,
) -> Network:
    """Parse and check a `.net` file (or `text`, named `source` in messages). `import_path`: folders whose
    `.net` files `import` may read besides the file's own folder tree, searched after the importing file's
    folder for a relative name; $NETC_PATH (folders separated by os.pathsep) adds more. `dims` binds symbols
    other than the batch size by name ({"T": 64}) for every use of the network: what needs a concrete size (a
    slice of a sequence axis) then checks."""
    path = str(source)
    text = read_source(path) if text is None else text
    module = parse(text, path)
    blocks: dict = {}
    networks: dict = {}
    root = _resolve(Path(path), None)
    importer = Importer([root.parent, *_search_path(import_path)], [(str(root), text)])
    importer.collect(module, root.parent, blocks, networks, seen={root})
    definition = _pick_network(networks, network, path)
    dims = _check_dims(definition, dims)
    fingerprint = _fingerprint(importer.sources, definition.name, dims)
    try:
        # Lowered with the symbols unbound: every shape checked, the IR that `netc ir` prints.
        graph = lowered(definition, blocks, fingerprint, dims, training=True, simplified=False)
    except RecursionError:
        raise NetcError(f"{path}: the network is nested too deeply (a block that applies itself?)") from None
    return Network(definition.name, definition, blocks, graph, path, dims=dims, fingerprint=fingerprint)


def _fingerprint(sources: list, name: str, dims: dict) -> str:
    """The SHA-256 of the source files read (path and text, in the order read), the network's name and the
    dims bound when loading."""
    return hashlib.sha256(json.dumps([sources, name, sorted(dims.items())]).encode()).hexdigest()


def _check_dims(definition: ast.Definition, dims: dict | None) -> dict:
    """`dims` as {symbol: int}, each a symbol of the network's inputs' shapes and a positive int."""
    if dims is None:
        return {}
    if not isinstance(dims, dict):
        raise NetcError(f"dims must be a dict of sizes by symbol, such as {{'T': 16}}, got {dims!r}")
    declared = {
        d.id for s in definition.body if isinstance(s, ast.InputDecl) for d in s.dims or () if isinstance(d, ast.Name)
    }
    for name, size in dims.items():
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise NetcError(f"dims names '{name}', not a symbol of {definition.name} (its symbols: {known})")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise NetcError(f"dims['{name}'] must be a positive integer, got {size!r}")
    return dict(dims)


def _search_path(import_path) -> list:
    """The folders of the import path: those given, then those of $NETC_PATH."""
    if isinstance(import_path, (str, os.PathLike)):
        import_path = [import_path]
    folders = [Path(p) for p in (import_path or [])]
    folders += [Path(p) for p in os.environ.get("NETC_PATH", "").split(os.pathsep) if p]
    return [_resolve(folder, None) for folder in folders]


def _resolve(path: Path, loc) -> Path:
    try:
        return path.resolve()
    except (RuntimeError, OSError) as err:  # a symlink loop: RuntimeError before Python 3.13, OSError after
        raise NetcError(f"cannot resolve {path}: {err}", loc) from None


class Importer:
    """Follows `import` lines: which files they may read (`roots`: folders whose trees are trusted), and the
    blocks they bring into scope."""

    def __init__(self, roots: list, sources: list):
        self.roots = roots
        self.sources = sources  # (path, text) of every file read, the importing one first

    def collect(self, module: ast.Module, directory: Path, blocks: dict, networks: dict, seen: set) -> None:
        """Gather blocks (from imports first) and networks; an import brings in another file's blocks."""
        for imp in module.imports:
            target = self.find(imp, directory)
            if target in seen:
                continue  # imported already (or an import cycle): its blocks are in scope once
            seen.add(target)
            text = read_source(target)
            self.sources.append((str(target), text))
            self.collect(parse(text, str(target)), target.parent, blocks, {}, seen)
        for definition in module.definitions:
            table = blocks if definition.kind == "block" else networks
            if definition.name in blocks or definition.name in networks:
                raise NetcError(f"'{definition.name}' is defined twice", definition.loc)
            if definition.kind == "block" and is_builtin(definition.name):
                # A built-in is looked up first: the block would never be used, and calls of it would be
                # checked against the built-in's signature.
                raise NetcError(
                    f"block '{definition.name}' has the name of a built-in layer or function: rename the block",
                    definition.loc,
                )
            is_block = definition.kind == "block"
            table[definition.name] = BlockDef(definition, blocks) if is_block else definition

    def find(self, imp: ast.Import, directory: Path) -> Path:
        """The file an import names: beside the importing file, else in a folder of the import path. Only a
        `.net` file inside a trusted folder tree; the message never quotes the file."""
        if not imp.path.endswith(".net"):
            raise NetcError(f"cannot import '{imp.path}': only .net files can be imported", imp.loc)
        candidates = [directory / imp.path] + [root / imp.path for root in self.roots[1:]]
        target = next((c for c in candidates if c.is_file()), None)
        if target is None and candidates[0].is_symlink():
            _resolve(candidates[0], imp.loc)  # a link to nothing, or a loop: say which
        if target is None:
            raise NetcError(f"cannot import '{imp.path}': no such file {candidates[0]}", imp.loc)
        resolved = _resolve(target, imp.loc)
        if resolved.suffix != ".net":  # a symlink named .net to something else
            raise NetcError(f"cannot import '{imp.path}': it is not a .net file", imp.loc)
        trusted = [directory, *self.roots]
        if not any(resolved.is_relative_to(root) for root in trusted):
            raise NetcError(
                f"cannot import '{imp.path}': {resolved} is outside the folder of the file that imports it",
                imp.loc,
                hint=f"add its folder to the import path: --import-path {resolved.parent} (or $NETC_PATH)",
            )
        return resolved


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
