"""The auth file, the CLI's settings (flags, environment, config file) and the
scheduler's security options: every problem named, the precedence as documented."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from corral.api.auth import AuthFileError, Principal, hash_token, parse_auth
from corral.api.clientconfig import ConfigError, resolve
from corral.api.security import TlsError, channel_credentials, server_credentials
from corral.runtime.main import api_security, build_parser, is_loopback
from tests.certs import TestCA

H = hash_token("t0ken")


def test_principals_by_token_subject_and_common_name() -> None:
    auth = parse_auth({"principals": [
        {"name": "alice", "token_sha256": H.upper(), "roles": ["ml"]},
        {"name": "ci", "cert_subject": "O=x,CN=ci", "roles": ["ml", "ads"]},
        {"name": "batch", "cert_common_name": "batch", "admin": True},
    ]})
    assert auth.identify("t0ken", None, None) == Principal("alice", frozenset({"ml"}))
    assert auth.identify(None, "O=x,CN=ci", "ci").name == "ci"
    assert auth.identify(None, "O=y,CN=batch", "batch").admin
    # A token decides alone, even next to a known certificate.
    assert auth.identify("wrong", "O=x,CN=ci", "ci") is None
    assert auth.identify(None, None, None) is None
    assert Principal("p", frozenset({"a"})).may_act_for("a")
    assert not Principal("p", frozenset({"a"})).may_act_for("b")


def test_every_problem_of_an_auth_file_is_named() -> None:
    with pytest.raises(AuthFileError) as err:
        parse_auth({"principals": [
            {"name": "a", "token_sha256": "abc", "roles": ["ml"]},
            {"name": "b", "roles": ["ml"]},
            {"name": "a", "token_sha256": H, "roles": ["Bad Role"], "colour": 1},
            {"name": "c", "cert_subject": "CN=c"},
            {"name": "d", "token_sha256": H, "admin": True},
        ]})
    text = str(err.value)
    for expected in ("principals[0].token_sha256: must be 64 hex digits",
                     "principals[1]: needs exactly one of",
                     "principals[2].colour: unknown field",
                     "principals[2].roles: 'Bad Role' is not a role name",
                     "principals[2].name: 'a' is named twice",
                     "principals[3]: needs roles or admin: true",
                     "principals[4].token_sha256: the same credential is given twice"):
        assert expected in text, text
    for bad in (None, [], {"principals": []}, {"principals": [], "x": 1}):
        with pytest.raises(AuthFileError):
            parse_auth(bad)


def test_client_settings_take_the_flag_then_the_environment_then_the_file(
        tmp_path: Path) -> None:
    cfg = tmp_path / "corral" / "config.yaml"
    cfg.parent.mkdir()
    (cfg.parent / "tok").write_text("from-file\n")
    cfg.write_text("api: [a:1, b:2]\ntoken_file: tok\nca_file: ca.pem\n")
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    s = resolve({}, env)
    assert s.addresses == ("a:1", "b:2") and s.token == "from-file"
    assert s.ca_file == cfg.parent / "ca.pem" and s.tls
    s = resolve({}, env | {"CORRAL_API": "c:3,c:3,d:4", "CORRAL_TOKEN": "from-env"})
    assert s.addresses == ("c:3", "d:4") and s.token == "from-env"
    s = resolve({"api": "e:5", "token": "from-flag"}, env | {"CORRAL_TOKEN": "x"})
    assert s.addresses == ("e:5",) and s.token == "from-flag"
    # No file at the default place: the defaults, plain text.
    s = resolve({}, {"XDG_CONFIG_HOME": str(tmp_path / "none")})
    assert s.addresses == ("127.0.0.1:7070",) and not s.tls and s.token is None


def test_a_bad_config_file_is_named_with_its_problems(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("api: 3\ntls: yes please\ntoken: a\ntoken_file: b\ncolour: blue\n")
    with pytest.raises(ConfigError) as err:
        resolve({}, {}, str(cfg))
    text = str(err.value)
    for expected in ("api: must be", "tls: must be true or false", "give one of them",
                     "colour: unknown setting"):
        assert expected in text
    with pytest.raises(ConfigError, match="does not exist"):
        resolve({}, {"CORRAL_CONFIG": str(tmp_path / "missing.yaml")})
    cfg.write_text("api: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve({}, {}, str(cfg))


@pytest.mark.parametrize(("api", "loopback"), [
    ("127.0.0.1:7070", True), ("127.1.2.3:0", True), ("[::1]:7070", True),
    ("localhost:7070", True), ("0.0.0.0:7070", False), ("10.0.0.5:7070", False),
    ("sched.example:7070", False),
])
def test_loopback_addresses(api: str, loopback: bool) -> None:
    assert is_loopback(api) is loopback


def security(*argv: str) -> tuple[dict, str | None]:
    args: argparse.Namespace = build_parser().parse_args(list(argv))
    return api_security(args)


def test_the_scheduler_refuses_unsafe_listening(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    srv = ca.server()
    auth = tmp_path / "auth.yaml"
    auth.write_text(f"principals:\n  - {{name: a, token_sha256: {H}, roles: [ml]}}\n")
    tls = ["--tls-cert", str(srv.cert), "--tls-key", str(srv.key)]
    _, bad = security("--api", "0.0.0.0:7070")
    assert bad is not None and "refusing to serve an open API on 0.0.0.0:7070" in bad
    assert security("--api", "0.0.0.0:7070", "--insecure")[1] is None
    assert security("--api", "127.0.0.1:7070")[1] is None
    _, bad = security("--api", "0.0.0.0:7070", "--auth-file", str(auth))
    assert bad is not None and "bearer tokens in clear text" in bad
    ok, bad = security("--api", "0.0.0.0:7070", "--auth-file", str(auth), *tls)
    assert bad is None and set(ok) == {"submit_checks", "credentials", "auth", "mode"}
    assert ok["mode"].startswith("API authentication on")
    _, bad = security("--tls-cert", str(srv.cert))
    assert bad == "--tls-cert and --tls-key go together"
    _, bad = security("--client-ca", str(ca.pem))
    assert bad == "--client-ca needs --tls-cert and --tls-key"
    _, bad = security("--checkpoint-prefix", "file://relative")
    assert bad is not None and "absolute path" in bad
    auth.write_text("principals: [{name: a}]\n")
    _, bad = security("--auth-file", str(auth))
    assert bad is not None and str(auth) in bad and "needs exactly one of" in bad


def test_certificate_files_are_checked_at_start_up(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    one, two = ca.server("one"), ca.server("two")
    with pytest.raises(TlsError, match="does not belong to the certificate"):
        server_credentials(one.cert, two.key)
    with pytest.raises(TlsError, match="is not a PEM certificate"):
        server_credentials(one.key, one.key)
    with pytest.raises(TlsError, match="cannot read TLS certificate"):
        server_credentials(tmp_path / "nope.crt", one.key)
    with pytest.raises(TlsError, match="holds no PEM certificate"):
        channel_credentials(one.key)
    with pytest.raises(TlsError, match="needs both"):
        channel_credentials(ca.pem, one.cert, None)
