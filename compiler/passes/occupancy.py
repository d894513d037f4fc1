"""Where the slots placed so far in an arena hold bytes over time, for the memory planner's first fit
(memory._place_greedy): the lowest aligned offset that no slot live during a given stretch of kernels holds,
found in O(log kernels) unions of merged byte ranges rather than by walking every placed slot."""

from __future__ import annotations

import bisect
import collections


class Occupancy:
    """The arena bytes the placed slots hold over time: a segment tree over the kernels whose every node
    keeps two unions of byte ranges (Ranges): `own`, the slots live throughout the node's kernels (the node
    is one of the canonical pieces of their lives), and `met`, every slot live at some kernel of the node's.

    The slots live at some kernel of [first, last] are then those in `met` of the canonical nodes of [first,
    last] and in `own` of those nodes' ancestors: O(log kernels) unions, in which the lowest clear offset is
    found by jumping past the merged ranges in the way, never by walking the placed slots. A first-fit scan
    of every placed slot below the candidate offset was quadratic (3.2 s of a 300-layer MLP's planning,
    mostly walking past the hundreds of parameters live throughout the step). Where the placed slots leave
    many gaps too small for the one placed (random lifetimes and sizes), the candidate still jumps past each
    range in its way, and placing is slower than the scan was (2,000 random buffers: 0.37 -> 0.61 s, under
    load, when this replaced it)."""

    def __init__(self, first: int, last: int):
        """A tree over kernels `first` to `last`, which every slot placed and asked about lies within."""
        self.first, self.last, self.leaves = first, last, 1 << max(0, last - first).bit_length()
        # node -> Ranges; node 1 is the root, node n's children are 2n and 2n + 1
        self.own: dict = collections.defaultdict(Ranges)
        self.met: dict = collections.defaultdict(Ranges)

    def _nodes(self, first: int, last: int) -> tuple:
        """(the canonical nodes of kernels [first, last], their ancestors). A life that reaches the last
        kernel is taken on to the last leaf (no life goes past the last kernel, so none meets another there
        that it did not meet before): the slots live throughout the step are then the root's alone."""
        low = first - self.first + self.leaves
        high = 2 * self.leaves if last == self.last else last - self.first + self.leaves + 1
        canonical = []
        while low < high:
            if low & 1:
                canonical.append(low)
                low += 1
            if high & 1:
                high -= 1
                canonical.append(high)
            low, high = low >> 1, high >> 1
        ancestors: set = set()
        for node in canonical:
            node >>= 1
            while node and node not in ancestors:
                ancestors.add(node)
                node >>= 1
        return canonical, ancestors

    def add(self, first: int, last: int, start: int, end: int) -> None:
        """A slot holds bytes [start, end) from kernel `first` to kernel `last`."""
        canonical, ancestors = self._nodes(first, last)
        for node in canonical:
            self.own[node].add(start, end)
            self.met[node].add(start, end)
        for node in ancestors:
            self.met[node].add(start, end)

    def lowest_clear(self, first: int, last: int, nbytes: int, alignment: int) -> int:
        """The lowest `alignment`-aligned offset whose `nbytes` no slot live at a kernel of [first, last]
        holds."""
        canonical, ancestors = self._nodes(first, last)
        unions = [self.met[n] for n in canonical if n in self.met]
        unions += [self.own[n] for n in ancestors if n in self.own]
        candidate, clear, i = 0, 0, 0
        while clear < len(unions):  # round the unions until each in a row is clear of the candidate's bytes
            moved = unions[i].clear_of(candidate, nbytes, alignment)
            clear = clear + 1 if moved == candidate else 1
            candidate, i = moved, (i + 1) % len(unions)
        return candidate


class Ranges:
    """A union of byte ranges, as sorted, disjoint, non-touching [start, end) pairs in two parallel lists."""

    __slots__ = ("ends", "starts")

    def __init__(self):
        self.starts: list = []
        self.ends: list = []

    def add(self, start: int, end: int) -> None:
        i = bisect.bisect_left(self.ends, start)  # the first range that ends at or after start
        j = bisect.bisect_right(self.starts, end)  # past the last range that starts at or before end
        if i < j:
            start, end = min(start, self.starts[i]), max(end, self.ends[j - 1])
        self.starts[i:j], self.ends[i:j] = [start], [end]

    def clear_of(self, candidate: int, nbytes: int, alignment: int) -> int:
        """The lowest aligned offset from `candidate` on whose `nbytes` meet none of these ranges. Every
        offset below the end of a range that [candidate, candidate + nbytes) meets would meet it too, so the
        candidate jumps past that end, and on past the next ranges while the gaps between them are too
        small."""
        starts, ends = self.starts, self.ends
        i = bisect.bisect_right(ends, candidate)  # the first range that ends after the candidate
        while i < len(starts) and starts[i] < candidate + nbytes:
            if ends[i] > candidate:  # (a range that ends in the alignment's padding is no longer in the way)
                candidate = align_up(ends[i], alignment)
            i += 1
        return candidate


def align_up(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment
