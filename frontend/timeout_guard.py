"""Caffe2's ``timeout_guard``: stop a process whose block of work (or whose shutdown) hangs.

    from caffe2.python import timeout_guard
    with timeout_guard.CompleteInTimeOrDie(600):
        workspace.RunNet(train_net)          # a KeyboardInterrupt arrives if this takes > 600 s

    timeout_guard.EuthanizeIfNecessary(120)  # before exit: kill the process if it is still alive in 120 s

On timeout the watcher logs the stack of every thread, interrupts the main thread (SIGINT: a
KeyboardInterrupt), and, if the guarded block has still not ended ``grace_secs`` later, ends the
process with exit status 1 (``os._exit``), as Caffe2 did when a hung collective ignored the interrupt.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
import traceback
from typing import Iterator

log = logging.getLogger("timeout_guard")

FORCE_EXIT_STATUS = 1


def _thread_stacks() -> str:
    names = {t.ident: t.name for t in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        parts.append(f"--- thread {names.get(ident, '?')} ({ident}):\n" + "".join(traceback.format_stack(frame)))
    return "\n".join(parts)


class WatcherThread(threading.Thread):
    """Waits ``timeout_secs`` for ``completed``; then interrupts, and later ends, the process."""

    def __init__(self, timeout_secs: float, grace_secs: float = 30.0):
        super().__init__(name=f"timeout_guard({timeout_secs}s)", daemon=True)
        self.timeout_secs = float(timeout_secs)
        self.grace_secs = float(grace_secs)
        self.completed = False
        self.timed_out = False
        self.condition = threading.Condition()
        self.caller_thread = threading.current_thread()

    def complete(self) -> None:
        with self.condition:
            self.completed = True
            self.condition.notify_all()

    def _wait(self, secs: float) -> bool:
        deadline = time.monotonic() + secs
        with self.condition:
            while not self.completed and time.monotonic() < deadline:
                self.condition.wait(deadline - time.monotonic())
            return self.completed

    def run(self) -> None:
        if self._wait(self.timeout_secs):
            return
        self.timed_out = True
        log.error("---- Timeout guard: timeout after %s secs (caller thread %s); thread stacks:\n%s",
                  self.timeout_secs, self.caller_thread.name, _thread_stacks())
        os.kill(os.getpid(), signal.SIGINT)
        if not self._wait(self.grace_secs):
            log.error("---- Timeout guard: still running %s secs after the interrupt; exiting", self.grace_secs)
            logging.shutdown()
            os._exit(FORCE_EXIT_STATUS)


@contextlib.contextmanager
def CompleteInTimeOrDie(timeout_secs: float, grace_secs: float = 30.0) -> Iterator[WatcherThread]:
    """Run the block; if it has not finished in ``timeout_secs`` seconds, interrupt the process."""
    watcher = WatcherThread(timeout_secs, grace_secs)
    watcher.start()
    try:
        yield watcher
    finally:
        watcher.complete()


def EuthanizeIfNecessary(timeout_secs: float = 120, grace_secs: float = 30.0) -> WatcherThread:
    """Kill the process if it is still alive ``timeout_secs`` from now (a shutdown that hangs)."""
    watcher = WatcherThread(timeout_secs, grace_secs)
    watcher.start()
    return watcher
