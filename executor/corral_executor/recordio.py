"""RecordIO framing for the Mesos v1 streaming APIs, without I/O: Corral's only codec.

Both sides use it: the executor reads the agent's event stream, the scheduler's Mesos
client and localmesos read and write the master's. It lives here because ``corral`` may
import the executor package but never the other way round (agents install only what they
run). A record is ``<decimal length>\\n<length bytes>``; HTTP chunk boundaries fall
anywhere, so ``Decoder.feed`` takes any slice and returns the records completed. Sizes
are bounded so a broken or hostile peer cannot make a reader buffer without limit.
"""

from __future__ import annotations

DEFAULT_MAX_RECORD = 64 * 1024 * 1024  # an OFFERS event of 10,000 offers is ~13 MB
_MAX_HEADER = 20  # a 64-bit length has at most 20 decimal digits


class RecordIOError(ValueError):
    """The stream is not valid RecordIO."""


def encode(record: bytes) -> bytes:
    """Frame one record."""
    return b"%d\n%s" % (len(record), record)


class Decoder:
    """Incremental decoder: ``feed`` bytes, get back whole records in order."""

    def __init__(self, max_record: int = DEFAULT_MAX_RECORD) -> None:
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
