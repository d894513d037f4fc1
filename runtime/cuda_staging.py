"""Page-locked host buffers through which a cuda run's NumPy inputs reach the device.

A copy from ordinary (pageable) host memory is staged by the driver before cudaMemcpyAsync returns, so the
host waits for it; from page-locked memory it is a DMA the GPU runs in order on the stream, and the host goes
on. Each input gets its own buffer, of its window's dtype, so staging is one NumPy copy (converting the type
on the way). A buffer may be written again only once the copy out of it has run: an event recorded after a
run's copies says when, and the next run waits for it (usually long done) before writing.
"""

from __future__ import annotations

import numpy as np

ALIGNMENT = 64  # each buffer starts on a cache line


class PinnedStaging:
    """A buffer per input window (name -> device array) in one page-locked allocation."""

    def __init__(self, cupy, windows: dict):
        sizes = {name: -(-window.nbytes // ALIGNMENT) * ALIGNMENT for name, window in windows.items()}
        self.memory = cupy.cuda.alloc_pinned_memory(max(sum(sizes.values()), 1))
        self.buffers, offset = {}, 0
        for name, window in windows.items():
            self.buffers[name] = np.ndarray(window.shape, window.dtype, buffer=self.memory, offset=offset)
            offset += sizes[name]
        # name -> (the window's device pointer, the buffer's address, bytes): a copy in is then one call
        self.copies = {
            name: (window.data, self.buffers[name].ctypes.data, window.nbytes) for name, window in windows.items()
        }
        self.event, self._recorded = cupy.cuda.Event(disable_timing=True), False

    def wait(self) -> None:
        """Until the last copies out of the buffers have run, so they may be written."""
        if self._recorded:
            self.event.synchronize()

    def copy_in(self, name: str, host: np.ndarray, stream) -> None:
        """`host` written into `name`'s buffer (converted to its dtype) and copied from there into its window
        on `stream`, with none of the checks ndarray.set makes of arrays it does not know."""
        target, address, nbytes = self.copies[name]
        self.stage(name, host)
        target.copy_from_host_async(address, nbytes, stream)

    def stage(self, name: str, host) -> np.ndarray:
        """`host` (array-like) written into `name`'s buffer, converted to its dtype; the buffer."""
        buffer = self.buffers[name]
        np.copyto(buffer, np.asarray(host).reshape(buffer.shape), casting="unsafe")
        return buffer

    def copies_queued(self, stream) -> None:
        """Every copy out of the buffers is queued on `stream`: the next wait() waits for them."""
        self.event.record(stream)
        self._recorded = True
