"""The scheduler core is pure: no I/O, clock, randomness or asyncio, by import.

Every module under ``framework/corral/core`` may import only the standard library's pure
parts, numpy, and the core itself. A decision that needs the time gets ``now``; one that
needs randomness gets a seeded ``random.Random`` from its caller (DESIGN.md, principle 7).
"""

from __future__ import annotations

import ast
from pathlib import Path

import corral.core

CORE = Path(corral.core.__file__).resolve().parent

ALLOWED = {
    "__future__", "bisect", "collections", "dataclasses", "enum", "heapq", "itertools",
    "math", "re", "statistics", "typing", "zlib", "numpy", "functools", "operator",
    "abc", "string", "contextlib", "json", "unicodedata", "base64", "hashlib", "shlex",
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def test_core_imports_only_pure_modules() -> None:
    bad: list[str] = []
    files = sorted(CORE.rglob("*.py"))
    assert len(files) > 20
    for path in files:
        for line, module in _imports(path):
            root = module.split(".")[0]
            if module.startswith("corral.") and not module.startswith("corral.core"):
                bad.append(f"{path.relative_to(CORE)}:{line} imports {module} (outside core)")
            elif root not in ALLOWED and root != "corral":
                bad.append(f"{path.relative_to(CORE)}:{line} imports {module}")
    assert not bad, "\n".join(bad)


def test_core_does_not_reach_into_builtins_for_time_or_randomness() -> None:
    # ``__import__`` or ``importlib`` would hide an import from the check above.
    for path in sorted(CORE.rglob("*.py")):
        text = path.read_text()
        assert "__import__(" not in text and "importlib" not in text, path
