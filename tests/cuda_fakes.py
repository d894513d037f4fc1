"""Stand-ins for CuPy, CuPy's cuBLAS binding, cuBLASLt and cuBLAS, on the host, refusing what the real ones
refuse. Device memory is host memory (a pointer is a host address), and a kernel is the CUDA module compiled
for the host (test_cuda_emulated.py), so the cuda backend's own code (runtime/cuda.py) runs unchanged on them.

What they hold to, as the real libraries do:
- Work queued on a stream runs only when something waits for it, as a GPU runs behind the host. Work issued
  while a stream captures is recorded, not run; it runs when the graph is launched. Waiting for a capturing
  stream (synchronize, a device-to-host copy) is an error.
- CuPy's cuBLAS binding (cupy_backends.cuda.libs.cublas) resets the handle's stream to the current stream
  before every call, and raises NotImplementedError while that stream captures: whatever the handle.
- cuBLASLt computes with the algorithm the heuristic chose, under the alignments that were in force when it
  was chosen, and needs the workspace that algorithm asked for; a classic cuBLAS handle captured without a
  workspace of its own would allocate one during the capture, which CUDA refuses.
"""

from __future__ import annotations

import ctypes
import itertools
import types

import numpy as np

STATUS_SUCCESS, STATUS_NOT_INITIALIZED, STATUS_INVALID_VALUE, STATUS_NOT_SUPPORTED = 0, 1, 7, 15
STATUS_EXECUTION_FAILED = 13


class CaptureError(RuntimeError):
    """What CUDA answers to an operation not permitted while a stream captures."""


# -- streams, graphs, memory -----------------------------------------------------------------------------


class FakeStream:
    """A CUDA stream: work queued on it runs in order, but only when something waits for it (synchronize, an
    event, a device-to-host copy, another stream's wait), as a GPU runs behind the host. Host memory that a
    queued copy reads is read then, so reusing a buffer before its copy has run is caught."""

    _pointers = itertools.count(0x1000, 0x10)
    by_pointer: dict = {}

    def __init__(self, cupy, non_blocking: bool = False):
        self.cupy, self.ptr, self.captured = cupy, next(self._pointers), None
        self.pending, self.queued, self.done = [], 0, 0
        FakeStream.by_pointer[self.ptr] = self

    @property
    def capturing(self) -> bool:
        return self.captured is not None

    def enqueue(self, work, what: str) -> None:
        """Queue `work`, or record it (as `what`) while capturing."""
        if self.capturing:
            self.captured.append((what, work))
            return
        if self.ptr == 0 and any(stream.capturing for stream in self.cupy.streams):
            raise CaptureError("the legacy stream was used while another stream captures")
        self.pending.append(work)
        self.queued += 1

    def run_until(self, position: int) -> None:
        while self.done < position:
            work = self.pending.pop(0)
            self.done += 1
            work()

    def __enter__(self):
        self.cupy.current.append(self)
        return self

    def __exit__(self, *error):
        self.cupy.current.pop()
        return False

    def begin_capture(self):
        if self.capturing:
            raise CaptureError("already capturing")
        self.captured = []

    def end_capture(self):
        graph, self.captured = FakeGraph(self.captured), None
        self.cupy.graphs.append(graph)
        return graph

    def synchronize(self):
        if self.capturing:
            raise CaptureError("cudaErrorStreamCaptureUnsupported: synchronize while capturing")
        self.run_until(self.queued)

    def record(self, event=None):
        event = event or FakeEvent()
        event.record(self)
        return event

    def wait_event(self, event):
        """Work queued after this waits for the work before the event as it was recorded now (recording
        the event again later does not move this wait)."""
        if self.capturing:
            raise CaptureError("waiting for an event not captured needs cudaEventWaitExternal")
        stream, position = event.stream, event.position
        self.enqueue(lambda: stream.run_until(position) if stream is not None else None, "wait")


class FakeEvent:
    def __init__(self, *args, **kwargs):
        self.stream, self.position = None, 0

    def record(self, stream):
        if stream.capturing:
            raise CaptureError("an event recorded during capture is a node, not something to wait for")
        self.stream, self.position = stream, stream.queued

    def synchronize(self):
        if self.stream is not None:
            self.stream.run_until(self.position)


class FakeGraph:
    """A captured graph: the work recorded, in order, queued on a stream by launch()."""

    def __init__(self, nodes: list):
        self.nodes = nodes

    def kinds(self) -> list:
        return [what for what, _ in self.nodes]

    def launch(self, stream=None):
        for what, work in self.nodes:
            stream.enqueue(work, what)


class FakeMemoryPointer:
    def __init__(self, cupy, ptr: int):
        self.cupy, self.ptr = cupy, ptr

    def __add__(self, offset: int):
        return FakeMemoryPointer(self.cupy, self.ptr + offset)

    def memset_async(self, value: int, size: int, stream):
        stream.enqueue(lambda: ctypes.memset(self.ptr, value, size), "memset")

    def copy_from_host_async(self, mem, size: int, stream):
        """cudaMemcpyAsync host to device from an address (an int, as CuPy takes it): from page-locked memory
        the host bytes are read when the copy runs; from pageable memory CUDA stages them before returning."""
        if not isinstance(mem, int):
            raise TypeError(f"copy_from_host_async takes an address, got {type(mem).__name__}")
        if self.cupy.is_pinned_address(mem):
            work = lambda: ctypes.memmove(self.ptr, mem, size)  # noqa: E731
        else:
            staged = ctypes.string_at(mem, size)
            work = lambda: ctypes.memmove(self.ptr, staged, size)  # noqa: E731
        stream.enqueue(work, "copy")

    def copy_from_device_async(self, src, size: int, stream):
        """cudaMemcpyAsync device to device, as CuPy's MemoryPointer does it: `src` a pointer, not an array."""
        if not isinstance(src, FakeMemoryPointer):
            raise TypeError(f"copy_from_device_async takes a MemoryPointer, got {type(src).__name__}")
        stream.enqueue(lambda: ctypes.memmove(self.ptr, src.ptr, size), "memcpy")


class FakeCupyArray(np.ndarray):
    """A CuPy array: NumPy over host memory standing for the device, its transfers going through streams."""

    cupy = None

    def __new__(cls, shape, dtype=np.float64, memptr=None):
        """A view of the device memory at `memptr` (CuPy's ndarray(shape, dtype, memptr=...))."""
        dtype, shape = np.dtype(dtype), tuple(np.atleast_1d(shape)) if shape != () else ()
        count = int(np.prod(shape, dtype=np.int64))
        buffer = (ctypes.c_char * max(count * dtype.itemsize, 1)).from_address(memptr.ptr)
        return np.frombuffer(buffer, dtype, count=count).reshape(shape).view(cls)

    @property
    def data(self):
        return FakeMemoryPointer(self.cupy, self.ctypes.data)

    def get(self, stream=None, out=None):
        """A device-to-host copy, into `out` if given (a NumPy array of the same shape and dtype, as CuPy
        asks)."""
        stream = stream or self.cupy.get_current_stream()
        stream.synchronize()  # refuses while capturing, as a device-to-host copy does
        if out is None:
            return np.array(self)
        if not isinstance(out, np.ndarray) or out.shape != self.shape or out.dtype != self.dtype:
            raise TypeError(f"cannot get a {self.dtype}{list(self.shape)} array into {out!r:.60}")
        np.copyto(out, np.asarray(self))
        return out

    def item(self):
        return self.get().item()  # a device-to-host copy: waits for the stream, as CuPy's does

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def set(self, host, stream=None):
        """A host-to-device copy: from page-locked memory it reads the host array when it runs; from pageable
        memory CUDA stages the bytes before the call returns. As CuPy's, it takes only a NumPy array of the
        same dtype and shape."""
        if not isinstance(host, np.ndarray) or host.dtype != self.dtype or host.shape != self.shape:
            raise TypeError(f"cannot set a {self.dtype}{list(self.shape)} array from {host!r:.60}")
        if not self.cupy.is_pinned(host):
            host = np.array(host, copy=True)
        target = np.asarray(self)
        (stream or self.cupy.get_current_stream()).enqueue(lambda: np.copyto(target, host), "copy")

    def copy(self):
        out = self.cupy.empty(self.shape, self.dtype)
        self.cupy.get_current_stream().enqueue(lambda: np.copyto(np.asarray(out), np.asarray(self)), "copy")
        return out


class FakeModule:
    """cupy.RawModule over the emulated module: get_function launches an entry on a stream."""

    def __init__(self, library, cupy):
        self.library, self.cupy = library, cupy

    def get_function(self, name: str):
        entry = ctypes.cast(getattr(self.library, name), ctypes.c_void_p)
        cupy = self.cupy

        def launch(grid, block, args, shared_mem=0, stream=None):
            (arena,) = args
            stream = stream or cupy.get_current_stream()
            cupy.load_kernel(stream, ("module", id(self.library), name))
            work = lambda: cupy.emulate(self.library, entry, arena.ctypes.data, grid[0], block[0])
            stream.enqueue(work, f"kernel {name}")

        return launch

    def get_global(self, name: str):
        return FakeMemoryPointer(self.cupy, ctypes.addressof(ctypes.c_int64.in_dll(self.library, name)))


def fake_cupy(compile_module, emulate, runtime_version: int = 13000):
    """A CuPy stand-in: `compile_module(source)` returns the emulated module's library, `emulate(library,
    entry, arena address, grid, block)` runs one launch of one of its entries."""
    cupy = types.SimpleNamespace(uint8=np.uint8, int64=np.int64, float32=np.float32, float64=np.float64)
    cupy.current, cupy.streams, cupy.graphs, cupy.buffers, cupy.pinned = [], [], [], [], []
    cupy.loaded = set()  # the kernels launched so far, whose code is loaded
    cupy.emulate = emulate
    array_type = type("ndarray", (FakeCupyArray,), {"cupy": cupy})

    def empty(shape, dtype):
        dtype = np.dtype(dtype)
        storage = np.zeros(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize + 256, np.uint8)
        cupy.buffers.append(storage)  # device memory lives as long as the fake device
        start = -storage.ctypes.data % 256  # CuPy's allocations are 256-byte aligned at least
        return array_type(shape, dtype, FakeMemoryPointer(cupy, storage.ctypes.data + start))

    def zeros(shape, dtype):
        return empty(shape, dtype)  # fresh storage is zeroed

    def load_kernel(stream, kernel) -> None:
        """CUDA loads a kernel's code when it is first launched (lazy loading), which a capture refuses."""
        if kernel not in cupy.loaded:
            if stream.capturing:
                raise CaptureError(f"{kernel} is first launched, so loaded, while the stream captures")
            cupy.loaded.add(kernel)

    def copyto(dst, src, casting="same_kind"):
        source, target = np.asarray(src), np.asarray(dst)
        stream = cupy.get_current_stream()
        load_kernel(stream, ("cupy", "copy", source.dtype, target.dtype))
        stream.enqueue(lambda: np.copyto(target, source, casting=casting), "copy")

    def alloc_pinned_memory(size: int):
        """Page-locked host memory: a buffer NumPy can view, remembered as pinned."""
        storage = np.zeros(max(size, 1), np.uint8)
        cupy.pinned.append(storage)
        return storage.data

    def is_pinned_address(address: int) -> bool:
        return any(p.ctypes.data <= address < p.ctypes.data + p.nbytes for p in cupy.pinned)

    def is_pinned(array) -> bool:
        return is_pinned_address(np.asarray(array).ctypes.data)

    def make_stream(non_blocking=False):
        stream = FakeStream(cupy, non_blocking)
        cupy.streams.append(stream)
        return stream

    legacy = FakeStream(cupy)
    legacy.ptr = 0  # the legacy default stream, which work of a capturing stream must not meet
    cupy.get_current_stream = lambda: cupy.current[-1] if cupy.current else legacy
    cupy.ndarray, cupy.empty, cupy.zeros, cupy.copyto = array_type, empty, zeros, copyto
    cupy.is_pinned, cupy.is_pinned_address, cupy.load_kernel = is_pinned, is_pinned_address, load_kernel
    cupy.RawModule = lambda code, options=(): FakeModule(compile_module(code), cupy)
    cupy.cuda = types.SimpleNamespace(
        Stream=make_stream,
        Event=FakeEvent,
        alloc_pinned_memory=alloc_pinned_memory,
        get_current_stream=cupy.get_current_stream,
        runtime=types.SimpleNamespace(runtimeGetVersion=lambda: runtime_version, getDeviceCount=lambda: 1),
    )
    return cupy
