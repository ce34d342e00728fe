"""Every job file in examples/ is a valid spec (they are what the README tells people
to submit)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from corral.core.spec import parse_job_spec

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_there_are_examples_of_each_kind() -> None:
    kinds = {yaml.safe_load(p.read_text()).get("kind", "command") for p in EXAMPLES}
    assert kinds == {"command", "dask", "torch"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_parses(path: Path) -> None:
    spec = parse_job_spec(yaml.safe_load(path.read_text()))
    assert spec.name and spec.role == "research"
