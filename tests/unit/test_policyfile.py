"""The scheduler's policy file: roles and knobs parse into the policy's settings, and
every bad field is named (all at once, never a traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.core.fairness import RolePolicy
from corral.core.policyfile import PolicyFileError, Reader, parse_policy
from corral.core.resources import Resources
from corral.yamlfile import load_policy_file


def test_empty_document_gives_the_defaults() -> None:
    pol = parse_policy(None)
    assert pol.roles == {} and pol.interval_s == 5.0
    assert pol.config.scaling.target_duration_s == 600.0
    assert pol.config.preemption_budget == 20


def test_roles_and_knobs() -> None:
    pol = parse_policy({
        "interval_s": 2, "target_duration_s": 120,
        "roles": [{"name": "research", "weight": 2, "guarantee": {"cpus": 8, "mem": 1024}},
                  {"name": "adhoc", "limit": {"cpus": 16}}],
        "policy": {"preemption_budget": 5, "max_step_up": 3, "sla_margin": 0.3},
    })
    assert pol.interval_s == 2.0
    assert pol.roles["research"] == RolePolicy(2.0, Resources(cpus=8, mem=1024), None)
    # A limit bounds the dimensions it names; the others are unbounded, not zero (a zero
    # memory limit would let the role run nothing).
    assert pol.roles["adhoc"].limit == Resources(cpus=16, mem=1e12, disk=1e12, gpus=1e6)
    assert pol.roles["adhoc"].weight == 1.0
    assert pol.quotas == {}
    cfg = pol.config
    assert cfg.scaling.target_duration_s == 120.0 and cfg.scaling.max_step_up == 3
    assert cfg.preemption_budget == 5 and cfg.sla.margin == 0.3


def test_every_bad_field_is_named_at_once() -> None:
    with pytest.raises(PolicyFileError) as err:
        parse_policy({
            "interval_s": 0, "colour": "blue",
            "roles": [{"name": "a", "weight": "heavy"}, {"weight": 1},
                      {"name": "a", "limit": {"cpus": -1}}],
            "policy": {"preemption_budget": -3, "nonsense": 1},
        })
    msg = str(err.value)
    for where in ("interval_s: must be between", "colour: unknown field",
                  "roles[0].weight: must be a number", "roles[1].name: is required",
                  "roles[2].name: role 'a' is named twice", "roles[2].limit.cpus",
                  "policy.preemption_budget", "policy.nonsense: unknown field"):
        assert where in msg, (where, msg)


def test_roles_must_be_a_list_and_the_document_a_mapping() -> None:
    with pytest.raises(PolicyFileError, match="roles: must be a list"):
        parse_policy({"roles": {"name": "a"}})
    with pytest.raises(PolicyFileError, match="document: must be a mapping"):
        parse_policy(["roles"])


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyFileError, match=r"cannot read policy file .*nope\.yaml"):
        load_policy_file(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("roles: [unclosed\n")
    with pytest.raises(PolicyFileError, match="not valid YAML"):
        load_policy_file(broken)
    bad = tmp_path / "bad.yaml"
    bad.write_text("roles:\n  - {name: x, weight: 0}\n")
    with pytest.raises(PolicyFileError, match=r"bad.yaml: invalid policy file:\n.*"
                                              r"roles\[0\].weight"):
        load_policy_file(bad)
    good = tmp_path / "good.yaml"
    good.write_text("roles:\n  - {name: x, weight: 3}\n")
    assert load_policy_file(good).roles["x"].weight == 3.0


def test_a_limit_naming_only_cpus_still_lets_the_role_run() -> None:
    from corral.core.fairness import Segment, allocate

    pol = parse_policy({"roles": [{"name": "adhoc", "limit": {"cpus": 4}}]})
    got = allocate({"adhoc": [Segment("j", Resources(cpus=1, mem=512), 10)]},
                   Resources(cpus=100, mem=100_000), pol.roles)["adhoc"]
    assert got.granted == {"j": 4} and got.stopped_by == "quota"


def test_quotas_are_read_for_the_scheduler_only() -> None:
    from corral.core.admission import Quota

    pol = parse_policy({"roles": [{"name": "a", "quota": {"jobs": 3, "cpus": 8}},
                                  {"name": "b", "quota": {"mem": 1024}}, {"name": "c"}]})
    assert pol.quotas == {"a": Quota(3, {"cpus": 8.0}), "b": Quota(None, {"mem": 1024.0})}
    with pytest.raises(PolicyFileError) as err:
        parse_policy({"roles": [{"name": "a", "quota": {"jobs": -1, "cores": 2}}]})
    assert "roles[0].quota.jobs" in str(err.value) and "roles[0].quota.cores" in str(err.value)
    r = Reader()
    r.roles([{"name": "a", "quota": {"jobs": 1}}])  # a simulation has no admission
    assert any("quota: unknown field" in e for e in r.errors)
def test_right_sizing_and_spot_knobs() -> None:
    cfg = parse_policy({"policy": {"rightsizing_headroom": 1.5, "rightsizing_band_low": 0.25,
                                   "rightsizing_percentile": 90,
                                   "rightsizing_min_samples": 3, "prefer_spot": 0}}).config
    rs = cfg.rightsizing
    assert (rs.headroom, rs.band_low, rs.percentile, rs.min_samples) == (1.5, 0.25, 90.0, 3)
    assert cfg.prefer_spot is False
    assert parse_policy(None).config.prefer_spot is True
    with pytest.raises(PolicyFileError) as err:
        parse_policy({"policy": {"rightsizing_band_low": 0, "prefer_spot": 2}})
    assert "policy.rightsizing_band_low" in str(err.value)
    assert "policy.prefer_spot" in str(err.value)
