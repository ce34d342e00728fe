"""Job spec parsing: every bad field is named, and specs round-trip through plain data."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.core.model import Tier
from corral.core.spec import SpecError, parse_job_spec, spec_to_dict


def base() -> dict:
    return {
        "role": "ml",
        "name": "score",
        "master": {"command": "run-master", "ports": 1},
        "workers": {"command": "run-worker", "min": 1, "max": 4, "initial": 2},
    }


def test_minimal_spec_gets_defaults() -> None:
    spec = parse_job_spec(base())
    assert spec.key == "ml/default/score"
    assert spec.tier is Tier.PREFERRED
    assert spec.master.resources.cpus == 1.0
    assert spec.workers.initial == 2
    assert spec.kill_grace_seconds == 10.0


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"role": "Bad Role"}, "role"),
        ({"tier": "gold"}, "tier"),
        ({"workers": {"command": "w", "min": 5, "max": 2}}, "workers.min"),
        ({"workers": {"command": "w", "min": 1, "max": 2, "initial": 3}}, "workers.initial"),
        ({"master": {"command": ""}}, "master.command"),
        ({"master": {"command": "m", "cpus": -1}}, "master.cpus"),
        ({"master": {"command": "m", "cpus": "two"}}, "master.cpus"),
        ({"master": {"command": "m", "env": {"MESOS_X": "1"}}}, "master.env.MESOS_X"),
        ({"checkpoint": {"uri": "ftp://x/y"}}, "checkpoint.uri"),
        ({"chekpoint": {}}, "chekpoint"),
        ({"constraints": {"max_per_host": 0}}, "constraints.max_per_host"),
        ({"deadline_seconds": 0}, "deadline_seconds"),
    ],
)
def test_bad_field_is_named(patch: dict, field: str) -> None:
    data = base() | patch
    with pytest.raises(SpecError) as exc:
        parse_job_spec(data)
    assert field in [e.field for e in exc.value.errors]


def test_all_errors_reported_at_once() -> None:
    with pytest.raises(SpecError) as exc:
        parse_job_spec({"role": "x", "tier": "gold", "master": {"cpus": -1}})
    fields = {e.field for e in exc.value.errors}
    assert {"name", "tier", "master.command", "master.cpus", "workers"} <= fields


def test_not_a_mapping() -> None:
    with pytest.raises(SpecError, match="spec: must be a mapping"):
        parse_job_spec(["role"])


names = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)


@given(
    role=names, name=names, tier=st.sampled_from(list(Tier)),
    wmin=st.integers(0, 5), extra=st.integers(0, 5), cpus=st.floats(0.01, 64),
    uri=st.one_of(st.none(), st.just("file:///tmp/ck")),
    spread=st.one_of(st.none(), st.just("market")),
    deadline=st.one_of(st.none(), st.floats(1, 10000)),
)
def test_round_trip(role, name, tier, wmin, extra, cpus, uri, spread, deadline) -> None:
    data = base() | {"role": role, "name": name, "tier": tier.value}
    data["workers"] = {"command": "w", "cpus": cpus, "min": wmin, "max": wmin + extra,
                       "initial": wmin}
    if uri:
        data["checkpoint"] = {"uri": uri}
    if spread:
        data["constraints"] = {"spread_over": spread, "attributes": {"zone": "a"}}
    if deadline:
        data["deadline_seconds"] = deadline
    if tier is Tier.REVOCABLE:
        data["master"] = {"command": "m"}
    spec = parse_job_spec(data)
    assert parse_job_spec(spec_to_dict(spec)) == spec


DASK_JOB = {"kind": "dask", "role": "research", "name": "churn-features",
            "master": {"cpus": 1, "mem": 2048},
            "driver": {"command": "python3 features.py --out s3://bucket/features"},
            "workers": {"cpus": 2, "mem": 8192, "min": 1, "max": 32, "initial": 2}}


def test_dask_job_from_the_issue_parses_with_corral_written_commands() -> None:
    spec = parse_job_spec(DASK_JOB)
    assert spec.kind.value == "dask" and spec.driver.startswith("python3 features.py")
    assert spec.master.command == "" and spec.workers.template.command == ""
    assert spec.master.ports == 1 and spec.workers.template.ports == 1
    assert parse_job_spec(spec_to_dict(spec)) == spec


@pytest.mark.parametrize("change,errors", [
    ({"kind": "spark"}, ["kind: must be one of command, dask, torch; got 'spark'"]),
    ({"driver": None}, ["driver.command: is required for kind dask"]),
    ({"driver": {"command": "  "}}, ["driver.command: is required for kind dask"]),
    ({"driver": {"cmd": "x"}}, ["driver.cmd: unknown field",
                                "driver.command: is required for kind dask"]),
    ({"master": {"command": "x"}}, ["master.command: is written by Corral for kind dask"]),
    ({"master": {"ports": 0}}, ["master.ports: kind dask needs at least 1"]),
    ({"kind": "command"}, ["driver: is only for kind dask",
                           "master.command: is required", "workers.command: is required"]),
    ({"kind": "torch"}, ["driver: is only for kind dask", "workers.command: is required"]),
])
def test_kind_errors_name_every_bad_field(change: dict, errors: list[str]) -> None:
    data = {k: v for k, v in {**DASK_JOB, **change}.items() if v is not None}
    with pytest.raises(SpecError) as err:
        parse_job_spec(data)
    got = [str(e) for e in err.value.errors]
    assert len(got) == len(errors), got
    for want, text in zip(errors, got, strict=True):
        assert text.startswith(want), got


def test_torch_job_needs_the_training_script_and_no_master_command() -> None:
    spec = parse_job_spec({"kind": "torch", "role": "r", "name": "t", "master": {},
                           "workers": {"command": "train.py", "max": 4}})
    assert spec.kind.value == "torch" and spec.master.command == ""
    with pytest.raises(SpecError, match=r"master\.command: is written by Corral for kind torch"):
        parse_job_spec({"kind": "torch", "role": "r", "name": "t",
                        "master": {"command": "x"}, "workers": {"command": "train.py"}})
