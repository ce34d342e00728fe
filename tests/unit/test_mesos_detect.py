"""corral.mesos.detect: address parsing and the ZooKeeper leader choice, without a server."""

from __future__ import annotations

import asyncio

import pytest

from corral.mesos.client import redirect_target
from corral.mesos.detect import (
    DetectorError,
    StaticDetector,
    ZooKeeperDetector,
    detector_for,
    leader_child,
    master_url_from_info,
    parse_zk_url,
)
from corral.mesos.errors import MasterUnavailable


def test_leader_is_lowest_json_info_child_and_others_are_ignored() -> None:
    assert leader_child(["log_replicas", "json.info_0000000012", "json.info_0000000003",
                         "info_0000000001", "json.info_12", "json.info_000000000x"]) == (
        "json.info_0000000003")
    assert leader_child(["log_replicas", "info_0000000001"]) is None
    assert leader_child([]) is None


def test_master_url_from_info_forms() -> None:
    assert master_url_from_info({"address": {"ip": "10.1.2.3", "port": 5050,
                                              "hostname": "m1"}}) == "http://10.1.2.3:5050"
    assert master_url_from_info({"address": {"hostname": "m1", "port": 5050}}) == (
        "http://m1:5050")
    # Legacy: ip is a uint32 in network byte order.
    assert master_url_from_info({"ip": 16777343, "port": 5050}) == "http://127.0.0.1:5050"
    assert master_url_from_info({"ip": 50462986, "port": 1}) == "http://10.1.2.3:1"
    assert master_url_from_info({"hostname": "h", "port": 7}) == "http://h:7"
    with pytest.raises(DetectorError):
        master_url_from_info({"id": "x"})


def test_parse_zk_url() -> None:
    assert parse_zk_url("zk://h1:2181,h2:2182/mesos") == ("h1:2181,h2:2182", "/mesos")
    assert parse_zk_url("zk://h1:2181/a/b/") == ("h1:2181", "/a/b")
    for bad in ("zk://h1:2181", "zk:///mesos", "zk://u:p@h1:2181/mesos", "http://h:1/x"):
        with pytest.raises(DetectorError):
            parse_zk_url(bad)


def test_static_detector_and_dispatch() -> None:
    assert StaticDetector("127.0.0.1:5050").url == "http://127.0.0.1:5050"
    assert StaticDetector("http://m:5050/").url == "http://m:5050"
    assert StaticDetector("https://m:5050/api").url == "https://m:5050"
    for bad in ("m", "http://m", "m:port", ":5050"):
        with pytest.raises(DetectorError):
            StaticDetector(bad)
    with pytest.raises(DetectorError, match="unknown scheme 'htp://'"):
        StaticDetector("htp://m:5050")
    assert StaticDetector("HTTP://m:5050").url == "http://m:5050"
    assert isinstance(detector_for("zk://h:1/mesos"), ZooKeeperDetector)
    d = detector_for("m:5050")
    assert isinstance(d, StaticDetector)
    assert asyncio.run(d.leader(0.1)) == "http://m:5050"


def test_redirect_target() -> None:
    assert redirect_target("//10.0.0.2:5050/api/v1/scheduler", "http://a:1") == (
        "http://10.0.0.2:5050")
    assert redirect_target("//m2:5050/api/v1/scheduler", "https://a:1") == "https://m2:5050"
    assert redirect_target("http://m3:5050/api/v1/scheduler", "http://a:1") == "http://m3:5050"
    for bad in ("", "/api/v1/scheduler", "//"):
        with pytest.raises(MasterUnavailable):
            redirect_target(bad, "http://a:1")
