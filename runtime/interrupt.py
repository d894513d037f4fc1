"""Ctrl-C during training, taken between steps rather than in the middle of one; and SIGTERM and SIGHUP, which
schedulers, `docker stop` and a closed terminal send, taken the same way.

Python raises KeyboardInterrupt wherever the program happens to be, which may be halfway through writing a
step's new weights back, and by default SIGTERM and SIGHUP end the process at once, losing the epoch. Inside
`deferred_interrupt()` the first of these signals only sets a flag, which the training loop checks where the
weights and the optimiser's state are consistent; a second one interrupts at once.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

# Ctrl-C; what schedulers and `docker stop` send; a closed terminal. Windows has no SIGHUP.
STOPPING_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


class InterruptRequested(Exception):
    """Raised by `Interrupt.check()` at a consistent point after a stopping signal; `signal` is its number."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signal = signum


class Interrupt:
    def __init__(self):
        self.requested: int | None = None  # the signal that asked to stop

    def check(self) -> None:
        if self.requested is not None:
            raise InterruptRequested(self.requested)


@contextmanager
def deferred_interrupt():
    """Yield an Interrupt whose flag the first stopping signal sets. Signal handlers belong to the main
    thread; in any other thread the signals cannot reach the loop anyway, and the flag simply stays down."""
    interrupt = Interrupt()
    if threading.current_thread() is not threading.main_thread():
        yield interrupt
        return

    def on_signal(signum, frame):
        if interrupt.requested is not None:
            raise KeyboardInterrupt  # the second signal: the sender will not wait for the step to end
        interrupt.requested = signum

    previous = {signum: signal.signal(signum, on_signal) for signum in STOPPING_SIGNALS}
    try:
        yield interrupt
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
