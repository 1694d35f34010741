"""Servers the tests start die with the test process, however it ends (kill -9 included).

`spawn` starts a server as a direct child that the kernel kills (PR_SET_PDEATHSIG, SIGKILL) when
its parent goes. The kernel's "parent" is the thread that started it, not the process, so every
start goes through one thread that lives as long as the process: a server started from a
short-lived thread (`asyncio.to_thread` in a load test restarting Redis) would otherwise die with
that thread.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before any fork
_starter = ThreadPoolExecutor(1, thread_name_prefix="tests-server-starter")


def _dies_with(parent: int) -> Callable[[], None]:
    def preexec() -> None:  # in the child, after any change of user (the kernel clears the signal on one)
        if _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0 or os.getppid() != parent:
            os._exit(1)  # the parent is already gone: no orphan

    return preexec


def spawn(args: list[str], **kwargs: Any) -> subprocess.Popen:
    """`subprocess.Popen(args, **kwargs)`, killed by the kernel when this process ends."""
    return _starter.submit(lambda: subprocess.Popen(args, preexec_fn=_dies_with(os.getpid()), **kwargs)).result()
