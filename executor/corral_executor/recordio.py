"""RecordIO decoding for the agent's executor event stream, without I/O.

The executor package may not import ``corral``, so it carries this small decoder of its
own. A record is ``<decimal length>\\n<length bytes>``; HTTP chunk boundaries fall
anywhere, so ``RecordDecoder.feed`` takes any slice and returns the records completed.
Sizes are bounded so a broken peer cannot make the executor buffer without limit.
"""

from __future__ import annotations

MAX_RECORD_BYTES = 16 * 1024 * 1024
_MAX_HEADER = 20  # a 64-bit length has at most 20 decimal digits


class RecordIOError(ValueError):
    """The stream is not valid RecordIO."""


def frame(record: bytes) -> bytes:
    """Frame one record (used by tests and scripted agents)."""
    return b"%d\n%s" % (len(record), record)


class RecordDecoder:
    """Incremental decoder: ``feed`` bytes, get back whole records in order."""

    def __init__(self, max_record: int = MAX_RECORD_BYTES) -> None:
        self._buf = bytearray()
        self._want: int | None = None
        self._max = max_record

    def feed(self, data: bytes) -> list[bytes]:
        self._buf.extend(data)
        records: list[bytes] = []
        while True:
            if self._want is None:
                newline = self._buf.find(b"\n")
                if newline < 0:
                    if len(self._buf) > _MAX_HEADER:
                        raise RecordIOError("RecordIO length header too long")
                    return records
                header = bytes(self._buf[:newline]).strip()
                if not header.isdigit():
                    raise RecordIOError(f"bad RecordIO length header {header[:24]!r}")
                want = int(header)
                if want > self._max:
                    raise RecordIOError(f"RecordIO record of {want} bytes exceeds {self._max}")
                del self._buf[: newline + 1]
                self._want = want
            if len(self._buf) < self._want:
                return records
            records.append(bytes(self._buf[: self._want]))
            del self._buf[: self._want]
            self._want = None

    @property
    def pending(self) -> int:
        """Bytes buffered but not yet part of a completed record."""
        return len(self._buf)
