"""The ledger journal: every record on local disk before its response's last byte leaves.

Layout of the journal directory (one per gateway process; a lock file keeps a second process
out):

    00000000000000000007.log   segments: one record per line (a compact JSON array)
    00000000000000000008.log   the active segment, appended with O_APPEND
    checkpoint                 "<segment> <offset> <crc32>": everything before it is in the database
    lock

`append(line)` is one `os.write` to the active segment: once it returns the kernel has the
bytes, so a killed process cannot lose them (an OS crash or power loss can, unless `fsync` says
otherwise, see below). The ledger writer reads records back from the checkpoint in batches
(`read`), writes them to the database, and moves the checkpoint (`advance`); segments wholly
behind the checkpoint are deleted. A checkpoint that lags (a crash between the database commit
and the checkpoint write) only means some records are read again: the database ignores ids it
has, so a replay is exactly once. The checkpoint is rewritten in place (one `pwrite` of a
fixed-width line): a rename per flush made ext4 start writeback on the event loop (about 1.4 ms
a flush here). A checkpoint whose checksum does not match (torn by an OS crash) counts as
missing: the segments still on disk are read again, and the database ignores what it has.

`fsync`: "off" leaves flushing to the kernel (an OS crash can lose the last ~30 s of records);
"batch" (default) has the writer `fdatasync` the segment before it reads each batch, so an OS
crash loses at most the records of one flush interval; "always" syncs every append (the
request waits for the disk).

Start-up opens a fresh segment (a torn last line of the previous run, possible only after an
OS crash, is then never appended to, and is skipped with a warning when read).
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import zlib
from pathlib import Path

import orjson

from tallygate.core.record import COLUMNS, Attempt, LedgerRecord

log = logging.getLogger("tallygate.journal")

_SUFFIX = ".log"
FSYNC_POLICIES = ("off", "batch", "always")


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
                 segment_bytes: int = 64 << 20) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._lock = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            raise JournalLocked(f"journal {self.dir} is in use by another gateway process; give "
                                "each process its own TALLYGATE_JOURNAL_DIR") from None
        self._sizes = {seq: (self.dir / _name(seq)).stat().st_size for seq in self._segments()}
        self.checkpoint = self._read_checkpoint()
        self._checkpoint_fd = os.open(self.dir / "checkpoint", os.O_RDWR | os.O_CREAT, 0o600)
        for seq in [s for s in self._sizes if s < self.checkpoint[0]]:
            self._delete(seq)
        self._active = max(self._sizes, default=self.checkpoint[0]) + 1
        self._sizes[self._active] = 0
        self._fd = self._open(self._active)
        self.backlog = self._backlog()  # bytes appended but not yet in the database
        self.appended = 0

    # ---------------------------------------------------------------- the hot path
    def append(self, line: bytes) -> None:
        """Append one record (`line` ends with a newline). Raises OSError if the disk refuses."""
        n = os.write(self._fd, line)
        while n < len(line):  # a short write (rare: a full disk or a huge line)
            n += os.write(self._fd, line[n:])
        if self.fsync == "always":
            os.fdatasync(self._fd)
        self._sizes[self._active] += n
        self.backlog += n
        self.appended += 1
        if self._sizes[self._active] >= self._segment_bytes:
            self._rotate()

    @property
    def full(self) -> bool:
        """Whether the backlog has reached `max_bytes` (the gateway should stop taking requests)."""
        return self.backlog >= self.max_bytes

    @property
    def end(self) -> tuple[int, int]:
        """The position after the last appended record."""
        return self._active, self._sizes[self._active]

    # ---------------------------------------------------------------- the writer
    def read(self, start: tuple[int, int], end: tuple[int, int], max_records: int,
             max_bytes: int = 8 << 20) -> tuple[list[bytes], tuple[int, int]]:
        """Up to `max_records` lines from `start` (not past `end`); returns them and the position
        after them. Thread-safe against `append` (it reads only bytes appended before `end`)."""
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
                if offset + len(chunk) >= stop and seq != end[0]:
                    log.warning("journal %s ends with a torn record of %d bytes (an OS crash?); "
                                "skipped", path.name, len(chunk))
                    seq, offset = seq + 1, 0
                    continue
                raise ValueError(f"journal record at {path.name}:{offset} is longer than {max_bytes} bytes")
            taken = chunk[:cut].split(b"\n")[:-1]
            room = max_records - len(lines)
            if len(taken) > room:
                taken = taken[:room]
                cut = sum(len(t) + 1 for t in taken)
            lines.extend(taken)
            offset += cut
        return lines, (seq, offset)

    def sync(self) -> None:
        """`fdatasync` the active segment when the policy is "batch" (called by the writer)."""
        if self.fsync == "batch":
            os.fdatasync(self._fd)

    def advance(self, position: tuple[int, int]) -> None:
        """Everything before `position` is in the database: move the checkpoint there and delete
        the segments behind it. Call it on the thread that appends (the event loop)."""
        old = self.checkpoint
        if position <= old:
            return
        self._write_checkpoint(position)
        self.checkpoint = position
        self.backlog = max(0, self.backlog - _distance(old, position, self._sizes))
        for seq in [s for s in self._sizes if s < position[0]]:
            self._delete(seq)

    def close(self) -> None:
        os.close(self._fd)
        os.close(self._checkpoint_fd)
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        os.close(self._lock)

    # ---------------------------------------------------------------- internals
    def _segments(self) -> list[int]:
        return sorted(int(p.name[:-len(_SUFFIX)]) for p in self.dir.glob("*" + _SUFFIX)
                      if p.name[:-len(_SUFFIX)].isdigit())

    def _open(self, seq: int) -> int:
        fd = os.open(self.dir / _name(seq), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if self.fsync != "off":
            _sync_dir(self.dir)  # the new file's name survives an OS crash too
        return fd

    def _rotate(self) -> None:
        if self.fsync != "off":
            os.fdatasync(self._fd)
        os.close(self._fd)
        self._active += 1
        self._sizes[self._active] = 0
        self._fd = self._open(self._active)

    def _delete(self, seq: int) -> None:
        self._sizes.pop(seq, None)
        try:
            os.unlink(self.dir / _name(seq))
        except FileNotFoundError:
            pass

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
        text = b"%d %d" % position
        os.pwrite(self._checkpoint_fd, b"%-64s\n" % (b"%s %d" % (text, zlib.crc32(text))), 0)

    def _backlog(self) -> int:
        cseq, coff = self.checkpoint
        return sum(size for seq, size in self._sizes.items() if seq >= cseq) - coff


def _distance(old: tuple[int, int], new: tuple[int, int], sizes: dict[int, int]) -> int:
    """Bytes between two positions."""
    if old[0] == new[0]:
        return new[1] - old[1]
    return sizes.get(old[0], 0) - old[1] + sum(sizes.get(s, 0) for s in range(old[0] + 1, new[0])) + new[1]


def _name(seq: int) -> str:
    return f"{seq:020d}{_SUFFIX}"


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ records <-> journal lines
_TAGS = COLUMNS.index("tags")
_ATTEMPTS = COLUMNS.index("attempts")
_FIELDS = len(COLUMNS)
_ATTEMPT_FIELDS = tuple(f.name for f in dataclasses.fields(Attempt))


def encode_record(rec: LedgerRecord) -> bytes:
    """One journal line: the record as a JSON array (attempts as objects), newline-terminated.

    Text is made safe for any database on the way: NUL becomes U+FFFD and a lone surrogate
    (which UTF-8 cannot hold) becomes '?'. The check costs one substring search when clean."""
    row = tuple(rec)
    try:
        line = orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
        if b"\\u0000" not in line:
            return line
    except TypeError:  # a lone surrogate somewhere
        pass
    return orjson.dumps(_safe(row), option=orjson.OPT_APPEND_NEWLINE)


def decode_record(line: bytes) -> LedgerRecord:
    """The record of one journal line. A line written by an older version lacks the fields added
    since (they are last): they read as None."""
    fields = orjson.loads(line)
    if len(fields) < _FIELDS:
        fields += [None] * (_FIELDS - len(fields))
    fields[_TAGS] = tuple(fields[_TAGS])
    fields[_ATTEMPTS] = tuple(Attempt(**a) for a in fields[_ATTEMPTS])
    return LedgerRecord(*fields)


def safe_text(text: str) -> str:
    """`text` without NUL (-> U+FFFD) or lone surrogates (-> '?'): storable in PostgreSQL."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _safe(value: object) -> object:
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {safe_text(str(k)): _safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_safe(v) for v in value]
    if isinstance(value, Attempt):
        return {name: _safe(getattr(value, name)) for name in _ATTEMPT_FIELDS}
    return value
