"""How big, and made of what, every free-form value a job spec carries may be.

Pure. A spec is stored as JSON in one ZooKeeper znode together with the job's runtime
detail (``store/records.py``: the record may be at most half of ZooKeeper's default
``jute.maxbuffer`` of 1 MiB, and its per-slot counters take up to ~25 bytes for each of
``workers.max`` <= 10,000 slots, i.e. ~250 KiB). The spec gets a quarter of the znode:
``SPEC_MAX_BYTES`` measured the way the store writes it (compact JSON, non-ASCII escaped),
which leaves the record well under its cap (a unit test encodes the worst case). The
per-field limits below keep any single field from taking the whole budget and keep
values usable where they go next: a command is one ``argv`` string (Linux caps one at
128 KiB), an environment variable travels through Mesos to ``execve``.

Characters: a *control character* is Unicode category Cc (C0, DEL, C1) or Cs (a lone
surrogate, which cannot be encoded as UTF-8). NUL cannot reach ``execve``; a newline in a
label or key breaks every log line and table it is printed in. Commands and environment
*values* may hold tab and newline (a YAML block scalar is a multi-line shell script; a
PEM value spans lines); nothing else may hold any control character.

Error details are bounded too: a field name built from user input (an env key) is shown
escaped and cut (``shown``), and a spec error lists at most ``MAX_ERRORS`` problems.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping
from typing import Any

ZNODE_BYTES = 1024 * 1024      # ZooKeeper's default jute.maxbuffer (store.records.ZNODE_LIMIT)
SPEC_MAX_BYTES = 128 * 1024    # the whole spec, as stored (compact JSON, ASCII-escaped)

COMMAND_MAX = 16 * 1024        # characters of one command
ENV_MAX_ENTRIES = 128          # variables per task template
ENV_KEY_MAX = 128
ENV_VALUE_MAX = 4 * 1024
LABEL_MAX_ENTRIES = 64
ATTRIBUTE_MAX_ENTRIES = 32
MAP_KEY_MAX = 128              # label and attribute keys
MAP_VALUE_MAX = 256            # label and attribute values
IMAGE_MAX = 512
URI_MAX = 1024
ATTRIBUTE_NAME_MAX = 128       # constraints.spread_over
REQUEST_ID_MAX = 128
KEY_MAX = 3 * 63 + 2           # role/environment/name

MAX_ERRORS = 20                # problems listed per spec error; the rest are counted
SHOWN_MAX = 40                 # characters of user input echoed in a field name

_MULTILINE_OK = frozenset("\t\n")


def is_control(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cs")


def control_problem(value: str, *, multiline: bool = False) -> str | None:
    """Why ``value`` may not be used (its first forbidden character), or None."""
    for i, ch in enumerate(value):
        if is_control(ch) and not (multiline and ch in _MULTILINE_OK):
            allowed = " (only tab and newline are allowed)" if multiline else ""
            return f"contains control character U+{ord(ch):04X} at position {i}{allowed}"
    return None


def text_problem(value: str, max_chars: int, *, multiline: bool = False) -> str | None:
    """Length, then characters: the first problem of a free-form string, or None."""
    if len(value) > max_chars:
        return f"is {len(value)} characters long; the limit is {max_chars}"
    return control_problem(value, multiline=multiline)


def shown(text: str, limit: int = SHOWN_MAX) -> str:
    """User input made safe to echo in an error: escaped, and cut to ``limit`` characters."""
    cut = text[:limit]
    escaped = cut.encode("unicode_escape").decode("ascii")
    return escaped + ("..." if len(text) > limit else "")


def stored_size(plain_spec: Mapping[str, Any]) -> int:
    """Bytes the spec takes in the store: compact, sorted, ASCII-escaped JSON (as
    ``store.records`` writes it)."""
    return len(json.dumps(plain_spec, separators=(",", ":"), sort_keys=True))
