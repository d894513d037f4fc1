"""Device buffers through which a cuda run hands its roots back, made once and reused.

A run's roots live in its arena, which the next run overwrites, so the caller gets copies. Allocating them
anew each run cost a pool allocation and a copy kernel per root, from Python, around every replay. Instead a
run keeps a few blocks, each with an array per root; a run copies its roots into a block that no caller holds
any more (cudaMemcpyAsync, on the run's stream) and returns that block's arrays. A block is free once nothing
but the run refers to its arrays: a training loop that reads the loss, or a caller that drops one batch's
outputs before the next (`out = model(x)` rebinds after the call: two blocks take turns), allocates nothing
after the first runs. A caller that keeps every result gets fresh blocks, never one it still holds: a view,
a DLPack export (torch.from_dlpack) or a dict of the arrays all hold a reference.
"""

from __future__ import annotations

import sys

ALIGNMENT = 256  # each root's array starts as CuPy's allocations do
BLOCKS = 2  # blocks kept for reuse


class ResultBlocks:
    """A ring of device blocks, each with one array per root window ((root id, arena window) pairs)."""

    def __init__(self, cupy, windows: list):
        self.cupy, self.windows = cupy, windows
        self.offsets, end = [], 0
        for _, window in windows:
            self.offsets.append(end)
            end += -(-window.nbytes // ALIGNMENT) * ALIGNMENT
        self.nbytes = max(end, 1)
        self.blocks = [self._new_block() for _ in range(BLOCKS)]
        # What sys.getrefcount says of an array only its block refers to, measured as _free_block asks (the
        # interpreter's own references to an argument differ between Python versions).
        self._unheld = max((_references(block, i) for block in self.blocks for i in range(len(block))), default=0)

    def _new_block(self) -> list:
        memory = self.cupy.empty(self.nbytes, dtype=self.cupy.uint8)
        return [
            self.cupy.ndarray(window.shape, window.dtype, memptr=memory.data + offset)
            for (_, window), offset in zip(self.windows, self.offsets)
        ]

    def copy_out(self, stream) -> dict:
        """{root id: array} of a free block, into which the roots are copied from the arena on `stream`."""
        block = self._free_block()
        for (vid, window), array in zip(self.windows, block):
            array.data.copy_from_device_async(window.data, window.nbytes, stream)
        return {vid: array for (vid, _), array in zip(self.windows, block)}

    def _free_block(self) -> list:
        """The least recently used block no caller holds, moved to the back of the ring; or, when the caller
        holds them all, a new one in place of the oldest (which the caller's references keep alive)."""
        for index, block in enumerate(self.blocks):
            if all(_references(block, i) <= self._unheld for i in range(len(block))):
                self.blocks.append(self.blocks.pop(index))
                return block
        self.blocks.pop(0)
        self.blocks.append(self._new_block())
        return self.blocks[-1]


def _references(block: list, index: int) -> int:
    """sys.getrefcount of a block's array: more than the block's own once a caller holds it (a variable, a
    dict, a view's base, a DLPack capsule)."""
    return sys.getrefcount(block[index])

