"""Ctrl-C during training, taken between steps rather than in the middle of one.

Python raises KeyboardInterrupt wherever the program happens to be, which may be halfway through writing a
step's new weights back. Inside `deferred_interrupt()` the first Ctrl-C only sets a flag, which the training
loop checks where the weights and the optimiser's state are consistent; a second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class InterruptRequested(Exception):
    """Raised by `Interrupt.check()` at a consistent point after the user pressed Ctrl-C."""


class Interrupt:
    def __init__(self):
        self.requested = False

    def check(self) -> None:
        if self.requested:
            raise InterruptRequested()


@contextmanager
def deferred_interrupt():
    """Yield an Interrupt whose flag the first SIGINT sets. Signal handlers belong to the main thread; in any
    other thread Ctrl-C cannot reach the loop anyway, and the flag simply stays down."""
    interrupt = Interrupt()
    if threading.current_thread() is not threading.main_thread():
        yield interrupt
        return

    def on_sigint(signum, frame):
        if interrupt.requested:
            raise KeyboardInterrupt  # the second Ctrl-C: the user will not wait for the step to end
        interrupt.requested = True

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield interrupt
    finally:
        signal.signal(signal.SIGINT, previous)
