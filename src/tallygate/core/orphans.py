"""Worker processes that end with their parent: `tallygate serve --workers N` killed with SIGKILL
must not leave its workers serving its port unsupervised (a restart then fails to bind it)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def end_with_parent(parent: int) -> None:
    """Have this process sent SIGTERM (a graceful stop: requests in flight finish, the ledger
    flushes) once the process `parent` is gone: the kernel's parent-death signal on Linux, a
    thread watching `os.getppid()` elsewhere. A parent gone already stops it at once."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0:
            if os.getppid() != parent:  # it died before the signal was asked for
                os.kill(os.getpid(), signal.SIGTERM)
            return
    threading.Thread(target=_watch, args=(parent,), name="tallygate-parent-watch", daemon=True).start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)
