"""Hostile specs: full-string names, control characters, size limits, bounded errors,
checkpoint bases, and the worst accepted spec still fitting the store's znode."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.core import limits as lim
from corral.core.checkpoints import task_location, under_prefix, uri_problem
from corral.core.intent import JobIntent, SlotIntent
from corral.core.job_state import JobPhase
from corral.core.spec import SpecError, parse_job_spec
from corral.store import records as rec


def base() -> dict:
    return {
        "role": "ml",
        "name": "score",
        "master": {"command": "run-master"},
        "workers": {"command": "run-worker", "min": 1, "max": 4, "initial": 2},
    }


def errors_of(data: dict) -> dict[str, str]:
    with pytest.raises(SpecError) as exc:
        parse_job_spec(data)
    return {e.field: e.message for e in exc.value.errors}


@pytest.mark.parametrize("field", ["role", "name", "environment"])
def test_a_name_with_a_trailing_newline_is_refused(field: str) -> None:
    assert field in errors_of(base() | {field: "a\n"})


def test_an_env_key_with_a_trailing_newline_is_refused() -> None:
    bad = errors_of(base() | {"master": {"command": "m", "env": {"A\n": "1"}}})
    assert list(bad) == ["master.env.A\\n"]


@pytest.mark.parametrize(("patch", "field"), [
    ({"master": {"command": "echo \x00"}}, "master.command"),
    ({"master": {"command": "echo \x1b[2J"}}, "master.command"),
    ({"master": {"command": "m", "env": {"A": "x\x00y"}}}, "master.env.A"),
    ({"labels": {"team": "a\nb"}}, "labels.team"),
    ({"labels": {"te\tam": "a"}}, "labels.te\\tam"),
    ({"constraints": {"attributes": {"zone": "\x7f"}}}, "constraints.attributes.zone"),
    ({"constraints": {"spread_over": "mar\nket"}}, "constraints.spread_over"),
    ({"master": {"command": "m", "image": "img\u0085"}}, "master.image"),
    ({"checkpoint": {"uri": "file:///data/\x00"}}, "checkpoint.uri"),
])
def test_control_characters_are_refused_where_they_cannot_go(patch: dict, field: str) -> None:
    assert field in errors_of(base() | patch)


def test_commands_and_env_values_may_span_lines() -> None:
    spec = parse_job_spec(base() | {"master": {"command": "set -e\n\techo hi\n",
                                               "env": {"PEM": "a\nb"}}})
    assert spec.master.command.count("\n") == 2


@pytest.mark.parametrize(("patch", "field"), [
    ({"master": {"command": "x" * (lim.COMMAND_MAX + 1)}}, "master.command"),
    ({"master": {"command": "m", "env": {"A": "x" * (lim.ENV_VALUE_MAX + 1)}}}, "master.env.A"),
    ({"master": {"command": "m", "env": {f"V{i}": "1" for i in range(lim.ENV_MAX_ENTRIES + 1)}}},
     "master.env"),
    ({"labels": {f"l{i}": "1" for i in range(lim.LABEL_MAX_ENTRIES + 1)}}, "labels"),
    ({"labels": {"team": "x" * (lim.MAP_VALUE_MAX + 1)}}, "labels.team"),
    ({"master": {"command": "m", "image": "i" * (lim.IMAGE_MAX + 1)}}, "master.image"),
    ({"checkpoint": {"uri": "s3://b/" + "x" * lim.URI_MAX}}, "checkpoint.uri"),
])
def test_every_free_form_field_has_a_size_limit(patch: dict, field: str) -> None:
    assert field in errors_of(base() | patch)


def test_the_whole_spec_has_a_size_limit_as_stored() -> None:
    # Each field within its own limit; together over the spec's share of a znode.
    env = {f"V{i}": "\u00e9" * 1000 for i in range(40)}  # non-ASCII: 6 bytes each in JSON
    bad = errors_of(base() | {"master": {"command": "m", "env": env}})
    assert list(bad) == ["spec"]
    assert str(lim.SPEC_MAX_BYTES) in bad["spec"]


def test_ten_thousand_bad_env_keys_give_a_bounded_error() -> None:
    env = {f"bad key {i} " + "k" * 1000: "v" for i in range(10_000)}
    with pytest.raises(SpecError) as exc:
        parse_job_spec(base() | {"master": {"command": "m", "env": env}})
    errors = exc.value.errors
    assert len(errors) == 1  # more entries than allowed: refused as a whole, named once
    assert errors[0].field == "master.env"
    env = {f"bad key {i} " + "k" * 100: "v" for i in range(lim.ENV_MAX_ENTRIES)}
    with pytest.raises(SpecError) as exc:
        parse_job_spec(base() | {"master": {"command": "m", "env": env},
                                 "workers": {"command": "w", "env": env}})
    errors = exc.value.errors
    assert len(errors) == lim.MAX_ERRORS + 1
    assert errors[-1].message == f"... and {2 * lim.ENV_MAX_ENTRIES - lim.MAX_ERRORS} more problems"
    assert all(len(e.field) < 80 for e in errors)
    assert len(str(exc.value)) < 5000


def test_an_unknown_field_name_is_shown_escaped_and_cut() -> None:
    bad = errors_of(base() | {"x\n" * 500: 1})
    (field,) = bad
    assert "\n" not in field and len(field) < 100


# ---------------------------------------------------------------- checkpoint bases


@pytest.mark.parametrize("uri", [
    "file:///data/ckpt", "file:///data/ckpt/", "s3://bucket/a/b", "gs://bucket",
    "memory://scratch/x",
])
def test_good_checkpoint_bases(uri: str) -> None:
    assert uri_problem(uri) is None
    assert parse_job_spec(base() | {"checkpoint": {"uri": uri}}).checkpoint_uri == uri


@pytest.mark.parametrize(("uri", "why"), [
    ("file://../..", "absolute path"),
    ("file://data/ckpt", "absolute path"),
    ("file:///data/../etc", "'..'"),
    ("file:///data/./x", "'..'"),
    ("file:///data//x", "empty"),
    ("s3:///path", "bucket"),
    ("s3://b/x?versionId=1", "'?'"),
    ("ftp://host/x", "scheme"),
    ("file:///etc", "system directory"),
    ("file:///usr/local/ckpt", "system directory"),
    ("file:///", "system directory"),
    ("/data/ckpt", "URI"),
])
def test_bad_checkpoint_bases(uri: str, why: str) -> None:
    problem = uri_problem(uri)
    assert problem is not None and why in problem
    assert "checkpoint.uri" in errors_of(base() | {"checkpoint": {"uri": uri}})


segment = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,6}", fullmatch=True)
bases = st.builds(lambda scheme, parts: f"{scheme}://{'/' if scheme == 'file' else ''}"
                  + "/".join(parts),
                  st.sampled_from(["file", "s3"]), st.lists(segment, min_size=1, max_size=4))
keys = st.builds(lambda r, e, n: f"{r}/{e}/{n}", segment, segment, segment)
slots = st.sampled_from(["master", "worker-0", "worker-1"])


@given(b1=bases, k1=keys, s1=slots, b2=bases, k2=keys, s2=slots)
def test_two_jobs_never_share_a_checkpoint_location(b1: str, k1: str, s1: str, b2: str,
                                                    k2: str, s2: str) -> None:
    assert uri_problem(b1) is None and uri_problem(b2) is None
    if task_location(b1, k1, s1) == task_location(b2, k2, s2):
        assert (k1, s1) == (k2, s2)


def test_prefixes_compare_whole_segments() -> None:
    assert under_prefix("file:///data/ckpt/a", ["file:///data/ckpt"])
    assert under_prefix("file:///data/ckpt", ["file:///data/ckpt/"])
    assert not under_prefix("file:///data/ckpt-evil", ["file:///data/ckpt"])
    assert not under_prefix("s3://data/ckpt", ["file:///data/ckpt"])


# ---------------------------------------------------------------- fits the store


def test_the_largest_accepted_job_still_fits_its_znode() -> None:
    """A spec just under SPEC_MAX_BYTES with workers.max 10,000, every slot's counters
    large and a long message: the record stays under the store's limit."""
    env = {f"V{i}": "x" * 4000 for i in range(20)}
    data = base() | {"master": {"command": "m" * lim.COMMAND_MAX, "env": env},
                     "workers": {"command": "w" * lim.COMMAND_MAX, "min": 0, "max": 10_000,
                                 "initial": 0},
                     "labels": {f"l{i}": "v" * 200 for i in range(lim.LABEL_MAX_ENTRIES)}}
    spec = parse_job_spec(data)
    assert lim.stored_size(rec.spec_to_dict(spec)) > lim.SPEC_MAX_BYTES * 0.9
    slots = {"master": SlotIntent(99_999, 999, False)}
    slots |= {f"worker-{i}": SlotIntent(99_999, 999, True) for i in range(10_000)}
    record = JobIntent(spec, "r" * lim.REQUEST_ID_MAX, 10_000, JobPhase.KILLING,
                       slots=slots, submitted_at=1e9, finished_at=1e9,
                       message="m" * 4000, target_reason="t" * 1000)
    data_bytes = rec.encode_job(spec.key, record, gen=10**9, shards=10**6)
    assert len(data_bytes) <= rec.ZNODE_LIMIT // 2
    assert rec.ZNODE_LIMIT == lim.ZNODE_BYTES
