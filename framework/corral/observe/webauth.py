"""Who may read the scheduler's HTTP pages: the API's principals and roles, over HTTP.

The same ``--auth-file`` as the gRPC API (``corral.api.auth``): a request presents a
bearer token in ``Authorization: Bearer <token>``, or in the ``corral_token`` cookie the
web UI's login form sets (HttpOnly, SameSite=Strict). The principal sees only the roles
it may act for; ``/metrics`` names every role's jobs, so it needs an admin principal.
``/healthz`` and ``/readyz`` are open (load balancers probe them without credentials).
Without an auth file every caller is ``auth.OPEN``, as on the gRPC API.
"""

from __future__ import annotations

from aiohttp import web

from corral.api.auth import OPEN, AuthConfig, Principal

COOKIE = "corral_token"


def token_of(request: web.Request) -> tuple[str | None, str | None]:
    """(token, problem): the bearer token a request presents, or why it is malformed."""
    headers = request.headers.getall("Authorization", [])
    if len(headers) > 1:
        return None, "more than one Authorization header"
    if headers:
        scheme, _, value = headers[0].strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None, "the Authorization header must be 'Bearer <token>'"
        return value.strip(), None
    cookie = request.cookies.get(COOKIE)
    return (cookie, None) if cookie else (None, None)


def principal_of(auth: AuthConfig | None, request: web.Request) -> Principal | None:
    """The caller, or None when the scheduler requires credentials it does not have."""
    if auth is None:
        return OPEN
    token, problem = token_of(request)
    if problem or token is None:
        return None
    return auth.identify(token, None, None)


def allowed_roles(who: Principal) -> frozenset[str] | None:
    """The roles ``who`` may see; None: every role."""
    return None if who.admin else frozenset(who.roles)
