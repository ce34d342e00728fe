"""Shared pytest configuration: make both import roots importable from a checkout."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for sub in ("framework", "executor"):
    p = str(ROOT / sub)
    if p not in sys.path:
        sys.path.insert(0, p)
