"""RecordIO framing for the Mesos v1 streaming APIs, without I/O.

A record on the wire is ``<decimal length>\\n<length bytes>``. Chunk boundaries of the
HTTP stream are arbitrary, so ``Decoder.feed`` accepts any slice of bytes and returns
the records it completed. The decoder bounds the size it accepts so a corrupt or hostile
peer cannot make it buffer without limit.
"""

from __future__ import annotations

DEFAULT_MAX_RECORD = 64 * 1024 * 1024
_MAX_HEADER_DIGITS = 20


class RecordIOError(ValueError):
    """The byte stream is not valid RecordIO."""


def encode(record: bytes) -> bytes:
    """Frame one record."""
    return str(len(record)).encode("ascii") + b"\n" + record


class Decoder:
    """Incremental RecordIO decoder: feed bytes, receive whole records."""

    def __init__(self, max_record: int = DEFAULT_MAX_RECORD) -> None:
        self._buf = bytearray()
        self._need: int | None = None
        self._max = max_record

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data`` and return every record it completes, in order."""
        self._buf += data
        out: list[bytes] = []
        while True:
            if self._need is None:
                nl = self._buf.find(b"\n")
                if nl < 0:
                    if len(self._buf) > _MAX_HEADER_DIGITS:
                        raise RecordIOError("record length header too long")
                    return out
                header = bytes(self._buf[:nl])
                if not header.isdigit():
                    raise RecordIOError(f"bad record length header {header[:32]!r}")
                need = int(header)
                if need > self._max:
                    raise RecordIOError(f"record of {need} bytes exceeds limit {self._max}")
                del self._buf[: nl + 1]
                self._need = need
            if len(self._buf) < self._need:
                return out
            out.append(bytes(self._buf[: self._need]))
            del self._buf[: self._need]
            self._need = None

    @property
    def pending(self) -> int:
        """Bytes buffered that do not yet form a whole record."""
        return len(self._buf)
