"""A real small filesystem for tests of a full disk: a tmpfs of a given size, mounted by the test
(it runs as root, as CI does; a mount that fails fails the test), and a filler that takes what
room is left."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (as `mount -o size=` takes it: "512k", "8m") mounted at `path`."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path, leave: int = 0) -> int:
    """Take all the room left on `path`'s filesystem with the file `path/filler` (but `leave`
    bytes); returns its size. Deleting the file gives the room back."""
    fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    block = b"\0" * (64 << 10)
    try:
        while True:
            try:
                os.write(fd, block)
            except OSError:
                if len(block) == 1:
                    break
                block = block[: len(block) // 2]
        size = os.fstat(fd).st_size
        if leave:
            size = max(0, size - leave)
            os.ftruncate(fd, size)
        return size
    finally:
        os.close(fd)
