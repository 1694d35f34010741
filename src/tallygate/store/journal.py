"""The ledger journal: every record on local disk before its response's last byte leaves.

Layout of the journal directory (one per gateway process; a lock file keeps a second process
out):

    00000000000000000007.log   segments: one record per line (`store/record_codec.py`)
    00000000000000000008.log   the active segment, appended with O_APPEND
    checkpoint                 "<segment> <offset> <crc32>": everything before it is in the database
    lock

`append(line)` writes the whole line to the active segment: once it returns the kernel has the
bytes, so a killed process cannot lose them (an OS crash or power loss can, unless `fsync` says
otherwise, see below). The ledger writer reads records back from the checkpoint in batches
(`read`), writes them to the database, and moves the checkpoint (`advance`); segments wholly
behind the checkpoint are deleted, and once the checkpoint is `release_bytes` into the active
segment a new one is started, so the journal's size follows the backlog. Both happen on the event
loop without a blocking call: the writer thread opens the next segment ahead (`prepare`, with its
directory `fsync`) and unlinks the segments left behind. A checkpoint that lags
(a crash between the database commit and the checkpoint write, or a checkpoint the disk refused)
only means some records are read again: the database ignores ids it has, so a replay is exactly
once. The checkpoint is rewritten in place (one `pwrite` of a fixed-width line): a rename per
flush made ext4 start writeback on the event loop (about 1.4 ms a flush here). A checkpoint whose
checksum does not match (torn by an OS crash) counts as missing.

A disk that refuses a write (ENOSPC, EIO, EROFS; a short write) never leaves part of a record
behind: the segment is cut back to its last whole record (or, if even that fails, the next
append goes to a fresh segment), `append` raises, and `error` says why until `probe()` finds the
journal writable again. So every line before a segment's known end is whole, and nothing
appended later can be glued to torn bytes. Start-up cuts a torn tail a previous run left (an OS
crash, or a kill between a failed write and its cut) at the last whole record.

`fsync`: "off" leaves flushing to the kernel (an OS crash can lose the last ~30 s of records);
"batch" (default) has the writer `fdatasync` the segment before it reads each batch, so an OS
crash loses at most the records of one flush interval; "always" syncs every append (the
request waits for the disk). A failed sync sets `error` too.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import zlib
from collections import deque
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("tallygate.journal")

_SUFFIX = ".log"
FSYNC_POLICIES = ("off", "batch", "always")
MIN_FREE_BYTES = 256 << 10  # `probe()` calls the journal writable again once this much disk is free


class JournalLocked(RuntimeError):
    """Another process holds this journal directory."""


class Journal:
    """An append-only, segmented, checkpointed log of ledger records (as JSON lines)."""

    @classmethod
    def claim(cls, base: str | Path, slots: int = 256, **options: object) -> Journal:
        """The journal in the first free slot `base/0`, `base/1` ... (one per gateway process:
        several workers share a base; a restarted worker takes over, and replays, a free slot)."""
        for slot in range(slots):
            try:
                return cls(Path(base) / str(slot), **options)  # type: ignore[arg-type]
            except JournalLocked:
                continue
        raise JournalLocked(f"all {slots} journal slots under {base} are in use")

    def __init__(self, directory: str | Path, *, fsync: str = "batch", max_bytes: int = 1 << 30,
                 segment_bytes: int = 8 << 20, release_bytes: int = 1 << 20) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._release_bytes = min(release_bytes, segment_bytes)
        self._lock = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            raise JournalLocked(f"journal {self.dir} is in use by another gateway process; give "
                                "each process its own TALLYGATE_JOURNAL_DIR") from None
        self._behind: deque[int] = deque()  # segments behind the checkpoint, for the writer to unlink
        self._spare: tuple[int, int] | None = None  # (segment, descriptor) the writer opened ahead
        self._sizes = {seq: _cut_torn_tail(self.dir / _name(seq)) for seq in self._segments()}
        self.checkpoint = self._read_checkpoint()
        self._checkpoint_fd = os.open(self.dir / "checkpoint", os.O_RDWR | os.O_CREAT, 0o600)
        for seq in [s for s in self._sizes if s < self.checkpoint[0]]:
            self._delete(seq)
        while self._behind:
            _unlink(self.dir / _name(self._behind.popleft()))
        self._active = max(self._sizes, default=self.checkpoint[0]) + 1
        self._sizes[self._active] = 0
        self._fd = self._open(self._active)
        self._retired: deque[int] = deque()  # descriptors of segments rotated away, for the writer to sync and close
        self._torn = False  # a failed append may have left bytes past the active segment's known end
        self.error: str | None = None  # why the journal cannot take writes now (None: it can)
        self.backlog = self._backlog()  # bytes appended but not yet in the database
        self.appended = 0

    # ---------------------------------------------------------------- the hot path
    def append(self, line: bytes) -> None:
        """Append one record (`line` ends with a newline), whole or not at all. Raises OSError
        if the disk refuses (and `error` then says why)."""
        if self._torn:
            self._mend()
        fd = self._fd
        try:
            n = os.write(fd, line)
            while n < len(line):  # a short write: the disk is full (the next write says so)
                written = os.write(fd, line[n:])
                if written == 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                n += written
            if self.fsync == "always":
                os.fdatasync(fd)
        except OSError as exc:
            self._failed(exc)
            raise
        size = self._sizes[self._active] = self._sizes[self._active] + n
        self.backlog += n
        self.appended += 1
        if size >= self._segment_bytes:
            self._rotate()

    @property
    def full(self) -> bool:
        """Whether the backlog has reached `max_bytes` (the gateway should stop taking requests)."""
        return self.backlog >= self.max_bytes

    @property
    def end(self) -> tuple[int, int]:
        """The position after the last appended record."""
        return self._active, self._sizes[self._active]

    def probe(self) -> bool:
        """Whether the journal takes writes again (torn bytes cut, the segment synced, at least
        `MIN_FREE_BYTES` free); clears `error` if so. Call it on the thread that appends."""
        try:
            if self._torn:
                self._mend()
            os.fdatasync(self._fd)
            disk = os.statvfs(self.dir)
            if disk.f_bavail * disk.f_frsize < MIN_FREE_BYTES:
                raise OSError(errno.ENOSPC, f"less than {MIN_FREE_BYTES >> 10} KiB free")
        except OSError as exc:
            self.error = _why(exc)
            return False
        self.error = None
        return True

    # ---------------------------------------------------------------- the writer
    def read(self, start: tuple[int, int], end: tuple[int, int], max_records: int,
             max_bytes: int = 8 << 20) -> tuple[list[bytes], tuple[int, int]]:
        """Up to `max_records` lines from `start` (not past `end`); returns them and the position
        after them. Thread-safe against `append` (it reads only bytes appended before `end`).
        Bytes that hold no whole line (a torn tail, or garbage an older version let a failed
        write leave) are skipped with an error: they never stop the records behind them."""
        seq, offset = start
        lines: list[bytes] = []
        while len(lines) < max_records and (seq, offset) < end:
            if seq not in self._sizes:  # a gap (segments are never skipped, but be safe)
                seq, offset = min((s for s in self._sizes if s > seq), default=end[0]), 0
                continue
            stop = end[1] if seq == end[0] else self._sizes[seq]
            if offset >= stop:
                seq, offset = seq + 1, 0
                continue
            path = self.dir / _name(seq)
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read(min(stop - offset, max_bytes))
                cut = chunk.rfind(b"\n") + 1
                if cut == 0:
                    skipped = _to_next_line(f, offset + len(chunk), stop) - offset
                    log.error("journal %s:%d holds %d bytes that are no whole record (a torn write); "
                              "skipped", path.name, offset, skipped)
                    offset += skipped
                    continue
            taken = chunk[:cut].split(b"\n")[:-1]
            room = max_records - len(lines)
            if len(taken) > room:
                taken = taken[:room]
                cut = sum(len(t) + 1 for t in taken)
            lines.extend(taken)
            offset += cut
        return lines, (seq, offset)

    def sync(self) -> None:
        """`fdatasync` the segments rotated away since the last call (then close them) and the
        active one, when the policy is "batch" (called by the writer thread). A failure sets
        `error` (the records stay readable; the writer moves them on)."""
        retired = []
        while self._retired:  # popleft: safe against a rotation on the event loop meanwhile
            retired.append(self._retired.popleft())
        try:
            for fd in retired:
                if self.fsync != "off":
                    os.fdatasync(fd)
            if self.fsync == "batch":
                os.fdatasync(self._fd)
        except OSError as exc:
            self.error = _why(exc)
            log.error("journal %s: fdatasync failed (%s)", self.dir, self.error)
        finally:
            for fd in retired:
                os.close(fd)
        self.prepare()

    def prepare(self) -> None:
        """(writer thread) Unlink the segments behind the checkpoint, and open the next segment
        ahead, so that rotating on the event loop costs no `open` nor directory `fsync`."""
        while self._behind:
            _unlink(self.dir / _name(self._behind.popleft()))
        if self._spare is None:
            seq = self._active + 1  # a rotation meanwhile makes this stale: `_rotate` then opens its own
            try:
                self._spare = seq, self._open(seq)
            except OSError as exc:
                log.warning("journal %s: cannot open the next segment ahead (%s)", self.dir, _why(exc))

    def advance(self, position: tuple[int, int]) -> None:
        """Everything before `position` is in the database: move the checkpoint there, delete
        the segments behind it, and start a new segment once it is `release_bytes` into the
        active one. Call it on the thread that appends (the event loop)."""
        old = self.checkpoint
        if position <= old:
            return
        if position[0] == self._active and position[1] >= self._release_bytes and self._rotate():
            if position[1] == self._sizes[position[0]]:  # all of it is in the database
                position = (self._active, 0)
        self._write_checkpoint(position)
        self.checkpoint = position
        self.backlog = max(0, self.backlog - _distance(old, position, self._sizes))
        for seq in [s for s in self._sizes if s < position[0]]:
            self._delete(seq)

    def close(self) -> None:
        for fd in self._retired:
            os.close(fd)
        if self._spare is not None:
            os.close(self._spare[1])
        while self._behind:
            _unlink(self.dir / _name(self._behind.popleft()))
        os.close(self._fd)
        os.close(self._checkpoint_fd)
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        os.close(self._lock)

    # ---------------------------------------------------------------- internals
    def _failed(self, exc: OSError) -> None:
        """An append failed: cut what it may have written, and say why."""
        self.error = _why(exc)
        self._torn = True
        try:
            self._mend()
        except OSError:
            pass

    def _mend(self) -> None:
        """Cut the active segment back to its last whole record; if the disk refuses even that,
        go on in a fresh segment (the torn bytes then lie past the old one's known end)."""
        try:
            os.ftruncate(self._fd, self._sizes[self._active])
        except OSError:
            if not self._rotate():
                raise
        self._torn = False

    def _segments(self) -> list[int]:
        return sorted(int(p.name[:-len(_SUFFIX)]) for p in self.dir.glob("*" + _SUFFIX)
                      if p.name[:-len(_SUFFIX)].isdigit())

    def _open(self, seq: int) -> int:
        fd = os.open(self.dir / _name(seq), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if self.fsync != "off":
            try:
                _sync_dir(self.dir)  # the new file's name survives an OS crash too
            except OSError:
                os.close(fd)
                raise
        return fd

    def _rotate(self) -> bool:
        """Go on in a new segment (the one opened ahead, if the writer did); False (and the
        current one kept) if it cannot be opened."""
        spare, self._spare = self._spare, None
        if spare is not None and spare[0] == self._active + 1:
            fd = spare[1]
        else:
            if spare is not None:  # opened ahead of a segment that is active already
                os.close(spare[1])
            try:
                fd = self._open(self._active + 1)
            except OSError as exc:
                log.warning("journal %s: cannot start a new segment (%s); the current one goes on", self.dir, _why(exc))
                return False
        if self.fsync == "off":
            os.close(self._fd)
        else:  # synced and closed by the writer thread, off the event loop (`sync`)
            self._retired.append(self._fd)
        self._fd = fd
        self._active += 1
        self._sizes[self._active] = 0
        self._torn = False
        return True

    def _delete(self, seq: int) -> None:
        """Forget segment `seq` (behind the checkpoint); the writer unlinks it (`prepare`)."""
        self._sizes.pop(seq, None)
        self._behind.append(seq)

    def _read_checkpoint(self) -> tuple[int, int]:
        start = min(self._sizes, default=0), 0
        try:
            fields = (self.dir / "checkpoint").read_bytes().split()
        except FileNotFoundError:
            return start
        if len(fields) == 2:  # written by a version that renamed the file into place
            fields.append(b"%d" % zlib.crc32(b"%s %s" % tuple(fields)))
        if len(fields) != 3 or not all(f.isdigit() for f in fields):
            return start
        seq, offset, crc = fields
        if zlib.crc32(b"%s %s" % (seq, offset)) != int(crc):
            log.warning("journal checkpoint in %s is torn; reading the segments on disk again", self.dir)
            return start
        return int(seq), int(offset)

    def _write_checkpoint(self, position: tuple[int, int]) -> None:
        """Rewrite the checkpoint in place. If the disk refuses, the old one stays: a restart
        reads some records again, which the database ignores."""
        text = b"%d %d" % position
        try:
            os.pwrite(self._checkpoint_fd, b"%-64s\n" % (b"%s %d" % (text, zlib.crc32(text))), 0)
        except OSError as exc:
            log.warning("journal %s: cannot write the checkpoint (%s); a restart reads some records "
                        "again", self.dir, _why(exc))

    def _backlog(self) -> int:
        cseq, coff = self.checkpoint
        return sum(size for seq, size in self._sizes.items() if seq >= cseq) - coff


def _why(exc: OSError) -> str:
    """An OSError as its errno name and words: "ENOSPC: No space left on device"."""
    name = errno.errorcode.get(exc.errno or 0, "OSError")
    return f"{name}: {exc.strerror or exc}"


def _cut_torn_tail(path: Path) -> int:
    """Cut a segment a previous run left back to its last whole record; returns its size."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return size
        f.seek(0)
        whole = f.read().rfind(b"\n") + 1
        f.truncate(whole)
    log.warning("journal %s ended with %d bytes of a torn record (never acknowledged); cut", path.name,
                size - whole)
    return whole


def _to_next_line(f: BinaryIO, pos: int, stop: int) -> int:
    """The position after the next newline at or after `pos` (or `stop`) in `f`, read from `pos`."""
    while pos < stop:
        block = f.read(min(stop - pos, 1 << 20))
        if not block:
            break
        newline = block.find(b"\n")
        if newline >= 0:
            return pos + newline + 1
        pos += len(block)
    return stop


def _distance(old: tuple[int, int], new: tuple[int, int], sizes: dict[int, int]) -> int:
    """Bytes between two positions."""
    if old[0] == new[0]:
        return new[1] - old[1]
    return sizes.get(old[0], 0) - old[1] + sum(sizes.get(s, 0) for s in range(old[0] + 1, new[0])) + new[1]


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _name(seq: int) -> str:
    return f"{seq:020d}{_SUFFIX}"


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
