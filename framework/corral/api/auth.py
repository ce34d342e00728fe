"""Who may call the job API, and for which roles: principals, the auth file, tokens.

Pure (no gRPC, no files): ``parse_auth`` reads the plain data of an auth file,
``AuthConfig.identify`` maps presented credentials to a ``Principal``, and
``Principal.may_act_for`` is the one authorisation rule.

An auth file (``corral scheduler --auth-file FILE``)::

    principals:
      - name: alice                  # shown in audit lines
        token_sha256: 9f86d081...    # sha256 (hex) of alice's bearer token
        roles: [ml-team, research]   # the roles alice may act for
      - name: ci
        cert_subject: "O=corral,CN=ci-bot"   # a client certificate's subject (RFC 4514)
        roles: [ml-team]
      - name: batch
        cert_common_name: batch-runner       # or only its common name
        roles: [batch]
      - name: ops
        token_sha256: 60303ae2...
        admin: true                  # may act for every role, sees every job

Tokens are stored only as hashes, so the file is not a secret worth stealing. A token
must be random and long (``corral token`` makes a 256-bit one): a plain sha256 is the
right hash for such a token and the wrong one for a password. A call that carries a
bearer token is identified by it alone; otherwise by its client certificate.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from corral.core.model import NAME_RE

PRINCIPAL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}\Z")
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_CREDENTIALS = ("token_sha256", "cert_subject", "cert_common_name")


class AuthFileError(ValueError):
    """An auth file is unreadable or invalid; the message names every bad field."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: its name and what it may act for."""

    name: str
    roles: frozenset[str] = frozenset()
    admin: bool = False

    def may_act_for(self, role: str) -> bool:
        return self.admin or role in self.roles


#: The caller when the scheduler runs without an auth file: anyone may do anything.
OPEN = Principal("anonymous", admin=True)


@dataclass(frozen=True)
class AuthConfig:
    """Principals by the credential that identifies them."""

    by_token: Mapping[str, Principal] = field(default_factory=dict)       # sha256 hex
    by_subject: Mapping[str, Principal] = field(default_factory=dict)
    by_common_name: Mapping[str, Principal] = field(default_factory=dict)

    def identify(self, token: str | None, subject: str | None,
                 common_name: str | None) -> Principal | None:
        """The principal these credentials belong to, or None (unauthenticated)."""
        if token is not None:
            return self.by_token.get(hash_token(token))
        if subject is not None and subject in self.by_subject:
            return self.by_subject[subject]
        if common_name is not None:
            return self.by_common_name.get(common_name)
        return None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> str:
    """A fresh bearer token: 256 random bits, URL-safe text."""
    return secrets.token_urlsafe(32)


def _principal(raw: Any, where: str, errors: list[str]) -> tuple[Principal, str, str] | None:
    """One entry: the principal, which credential kind, and its value."""
    if not isinstance(raw, Mapping):
        errors.append(f"{where}: must be a mapping")
        return None
    allowed = {"name", "roles", "admin", *_CREDENTIALS}
    for k in raw:
        if k not in allowed:
            errors.append(f"{where}.{k}: unknown field (expected one of: "
                          f"{', '.join(sorted(allowed))})")
    name = raw.get("name")
    if not isinstance(name, str) or not PRINCIPAL_NAME_RE.fullmatch(name):
        errors.append(f"{where}.name: must be 1-128 characters of letters, digits, "
                      "'.', '_', '@' or '-'")
        return None
    kinds = [k for k in _CREDENTIALS if k in raw]
    if len(kinds) != 1:
        errors.append(f"{where}: needs exactly one of {', '.join(_CREDENTIALS)}")
        return None
    kind = kinds[0]
    value = raw[kind]
    if not isinstance(value, str) or not value.strip():
        errors.append(f"{where}.{kind}: must be a non-empty string")
        return None
    if kind == "token_sha256":
        value = value.lower()
        if not _HEX64.fullmatch(value):
            errors.append(f"{where}.token_sha256: must be 64 hex digits (the sha256 of the "
                          "token; `corral token` prints one)")
            return None
    admin = raw.get("admin", False)
    if not isinstance(admin, bool):
        errors.append(f"{where}.admin: must be true or false")
        return None
    roles = raw.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        errors.append(f"{where}.roles: must be a list of role names")
        return None
    for r in roles:
        if not NAME_RE.fullmatch(r):
            errors.append(f"{where}.roles: {r!r} is not a role name")
    if not roles and not admin:
        errors.append(f"{where}: needs roles or admin: true (it could do nothing)")
    return Principal(name, frozenset(roles), admin), kind, value


def parse_auth(data: Any) -> AuthConfig:
    """An ``AuthConfig`` from plain data, or ``AuthFileError`` naming every bad field."""
    errors: list[str] = []
    if not isinstance(data, Mapping) or set(data) != {"principals"}:
        raise AuthFileError("invalid auth file:\n  document: must be a mapping with one "
                            "key, principals")
    raw = data["principals"]
    if not isinstance(raw, list) or not raw:
        raise AuthFileError("invalid auth file:\n  principals: must be a non-empty list")
    tables: dict[str, dict[str, Principal]] = {k: {} for k in _CREDENTIALS}
    names: set[str] = set()
    for i, entry in enumerate(raw):
        where = f"principals[{i}]"
        name = entry.get("name") if isinstance(entry, Mapping) else None
        if isinstance(name, str):
            if name in names:
                errors.append(f"{where}.name: {name!r} is named twice")
            names.add(name)
        got = _principal(entry, where, errors)
        if got is None:
            continue
        principal, kind, value = got
        if value in tables[kind]:
            errors.append(f"{where}.{kind}: the same credential is given twice")
        tables[kind][value] = principal
    if errors:
        raise AuthFileError("invalid auth file:\n  " + "\n  ".join(errors))
    return AuthConfig(by_token=tables["token_sha256"], by_subject=tables["cert_subject"],
                      by_common_name=tables["cert_common_name"])
