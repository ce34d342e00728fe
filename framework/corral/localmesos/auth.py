"""HTTP authentication as Mesos does it: Basic for frameworks and operators, JWT for
executors. Pure (no I/O but reading the credentials file in ``load_credentials``).

* **Credentials** (``--credentials FILE``): Mesos' JSON format
  ``{"credentials": [{"principal": "p", "secret": "s"}, ...]}`` or its text format, one
  ``principal secret`` pair per line.
* **Basic** (``--authenticate-http-frameworks``, realm ``mesos-master-scheduler``; the
  operator API's ``--authenticate-http-readwrite``, realm ``mesos-master-readwrite``):
  ``basic_principal`` answers the authenticated principal or a 401 challenge, as
  libprocess' ``BasicAuthenticator`` does (same ``WWW-Authenticate`` headers).
* **Executor tokens** (``--authenticate-http-executors``, realm ``mesos-agent-executor``):
  the agent signs ``{"fid", "eid", "cid"}`` claims with HS256 (what Mesos'
  ``JWTSecretGenerator`` hands executors in ``MESOS_EXECUTOR_AUTHENTICATION_TOKEN``);
  ``bearer_claims`` checks a request's ``Authorization: Bearer`` token like libprocess'
  ``JWTAuthenticator``, and ``claims_error`` is the agent's per-call check that the claims
  name the framework, executor and container of the call (403 otherwise).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEDULER_REALM = "mesos-master-scheduler"
READWRITE_REALM = "mesos-master-readwrite"
EXECUTOR_REALM = "mesos-agent-executor"
MAX_CREDENTIALS_BYTES = 1024 * 1024
MAX_HEADER = 8192


class CredentialsError(ValueError):
    """The credentials file cannot be used."""


@dataclass(frozen=True)
class Challenge:
    """Why a request is not authenticated: a 401 with this ``WWW-Authenticate`` value."""

    www_authenticate: str
    message: str = ""


def load_credentials(path: str) -> dict[str, str]:
    """principal → secret from a Mesos credentials file (JSON or text)."""
    try:
        raw = Path(path).read_bytes()[: MAX_CREDENTIALS_BYTES + 1]
    except OSError as exc:
        raise CredentialsError(f"cannot read credentials {path}: {exc.strerror}") from None
    if len(raw) > MAX_CREDENTIALS_BYTES:
        raise CredentialsError(f"credentials file {path} is over {MAX_CREDENTIALS_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialsError(f"credentials file {path} is not UTF-8") from None
    pairs: list[tuple[Any, Any]] = []
    if text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
            pairs = [(c["principal"], c["secret"]) for c in doc["credentials"]]
        except (ValueError, KeyError, TypeError):
            raise CredentialsError(f"{path}: expected {{\"credentials\": [{{\"principal\": "
                                   f"..., \"secret\": ...}}]}}") from None
    else:
        for n, line in enumerate(text.splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise CredentialsError(f"{path}:{n}: expected 'principal secret'")
            pairs.append((parts[0], parts[1]))
    creds: dict[str, str] = {}
    for principal, secret in pairs:
        if not isinstance(principal, str) or not isinstance(secret, str) or not principal \
                or ":" in principal or not principal.isprintable():
            raise CredentialsError(f"{path}: a principal must be a printable string "
                                   "without ':', and its secret a string")
        creds[principal] = secret
    if not creds:
        raise CredentialsError(f"{path} holds no credentials")
    return creds


def basic_principal(header: str | None, credentials: dict[str, str], realm: str
                    ) -> str | Challenge:
    """The principal an ``Authorization: Basic`` header authenticates, or the challenge."""
    if header is None:
        return Challenge(f'Basic realm="{realm}"')
    scheme, _, value = header.partition(" ")
    if scheme != "Basic" or not value or len(header) > MAX_HEADER:
        return Challenge(f'Basic realm="{realm}"', "Malformed 'Authorization' header")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return Challenge(f'Basic realm="{realm}"', "Malformed 'Authorization' header")
    principal, sep, secret = decoded.partition(":")
    known = credentials.get(principal) if sep else None
    if known is None or not hmac.compare_digest(known.encode(), secret.encode()):
        return Challenge(f'Basic realm="{realm}"')
    return principal


# ---------------------------------------------------------------------------- JWT (HS256)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_token(claims: dict[str, str], key: bytes) -> str:
    """A compact JWT (HS256) carrying ``claims``."""
    head = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64url(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    sig = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64url(sig)}"


def executor_token(key: bytes, framework_id: str, executor_id: str, container_id: str) -> str:
    return sign_token({"fid": framework_id, "eid": executor_id, "cid": container_id}, key)


def _invalid(message: str) -> Challenge:
    return Challenge(f'Bearer realm="{EXECUTOR_REALM}", error="invalid_token", '
                     f'error_description="{message}"', message)


def bearer_claims(header: str | None, key: bytes) -> dict[str, str] | Challenge:
    """The claims of a valid ``Authorization: Bearer`` JWT, or the 401 challenge."""
    if header is None:
        # Without credentials, no error details (RFC 6750, section 3.1).
        return Challenge(f'Bearer realm="{EXECUTOR_REALM}"')
    parts = header.split(" ")
    if len(parts) != 2 or len(header) > MAX_HEADER:
        return _invalid("Malformed 'Authorization' header")
    if parts[0] != "Bearer":
        return _invalid(f"Scheme '{parts[0][:32]}' unsupported")
    pieces = parts[1].split(".")
    if len(pieces) != 3:
        return _invalid("Invalid JWT: Expected 3 parts")
    try:
        head = json.loads(_unb64url(pieces[0]))
        claims = json.loads(_unb64url(pieces[1]))
        sig = _unb64url(pieces[2])
    except (ValueError, binascii.Error):
        return _invalid("Invalid JWT: Failed to decode token")
    if not isinstance(head, dict) or head.get("alg") != "HS256":
        return _invalid("Invalid JWT: Unsupported token algorithm")
    want = hmac.new(key, f"{pieces[0]}.{pieces[1]}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(want, sig):
        return _invalid("Invalid JWT: Token signature does not match")
    if not isinstance(claims, dict) or not claims:
        return _invalid("JWT claims missing")
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in claims.items()}


def claims_error(claims: dict[str, str], framework_id: str, executor_id: str,
                 container_id: str) -> str | None:
    """Mesos' ``verifyExecutorClaims``: the 403 message if the token is another's."""
    if claims.get("fid") != framework_id:
        return (f"Authenticated principal does not contain an 'fid' claim with the "
                f"framework ID {framework_id}, which is set in the call")
    if claims.get("eid") != executor_id:
        return (f"Authenticated principal does not contain an 'eid' claim with the "
                f"executor ID {executor_id}, which is set in the call")
    if claims.get("cid") != container_id:
        return ("Authenticated principal does not contain a 'cid' claim with the correct "
                "active ContainerID")
    return None
