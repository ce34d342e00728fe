"""Reading YAML files for the shell: the policy file and simulator scenarios.

The pure parsers (``core.policyfile.parse_policy``, ``sim.scenario.parse_scenario``) take
plain data; this module owns the file I/O and turns every failure into the caller's error
type with a message that names the file, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from corral.core.policyfile import PolicyFileError, SchedulerPolicy, parse_policy


def read_yaml_file(path: str | Path, what: str, exc: type[ValueError]) -> Any:
    """The parsed YAML of ``path``; an unreadable file or bad YAML raises ``exc`` with a
    message that names ``what`` (e.g. "policy file") and the path."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise exc(f"cannot read {what} {path}: {e.strerror or e}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise exc(f"{what} {path} is not valid YAML: {e}") from None


def load_policy_file(path: str | Path) -> SchedulerPolicy:
    """Read and parse a policy file; every problem is a ``PolicyFileError`` with the path."""
    data = read_yaml_file(path, "policy file", PolicyFileError)
    try:
        return parse_policy(data)
    except PolicyFileError as exc:
        raise PolicyFileError(f"{path}: {exc}") from None
