"""ListJobs pages: page sizes and the opaque page token.

A page holds the jobs whose keys follow the token's key, in key order, so paging is
stable while jobs come and go (a job created behind the cursor is simply not in this
listing). The token is ``base64url("k1:" + last key)``; a token that does not decode to a
well-formed key is refused, naming ``page_token``.
"""

from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Sequence
from typing import TypeVar

from corral.core.limits import KEY_MAX
from corral.core.model import NAME_RE

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_PREFIX = "k1:"

T = TypeVar("T")


class BadPage(ValueError):
    """``field`` of the request is unusable; the message says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def page_size(requested: int) -> int:
    if requested < 0:
        raise BadPage("page_size", f"must be 0 (the default, {DEFAULT_PAGE_SIZE}) or more")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def is_job_key(key: str) -> bool:
    parts = key.split("/")
    return len(key) <= KEY_MAX and len(parts) == 3 and all(NAME_RE.fullmatch(p) for p in parts)


def encode_token(last_key: str) -> str:
    return base64.urlsafe_b64encode((_PREFIX + last_key).encode()).decode()


def decode_token(token: str) -> str | None:
    """The key a page token continues after; None for the first page."""
    if not token:
        return None
    if len(token) > 4 * KEY_MAX:
        raise BadPage("page_token", "is not a token this server gave out")
    try:
        text = base64.urlsafe_b64decode(token.encode("ascii")).decode()
    except (binascii.Error, UnicodeError, ValueError):
        raise BadPage("page_token", "is not a token this server gave out") from None
    if not text.startswith(_PREFIX) or not is_job_key(text[len(_PREFIX):]):
        raise BadPage("page_token", "is not a token this server gave out")
    return text[len(_PREFIX):]


def page(keys_sorted: Sequence[str], items: Sequence[T], after: str | None,
         size: int) -> tuple[list[T], str]:
    """The items (parallel to ``keys_sorted``) after key ``after``; and the next token."""
    start = 0 if after is None else bisect.bisect_right(keys_sorted, after)
    chosen = list(items[start:start + size])
    more = start + size < len(items)
    return chosen, encode_token(keys_sorted[start + size - 1]) if more and chosen else ""
