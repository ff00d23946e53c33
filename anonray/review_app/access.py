"""Who may use the review app: the token, the Host header, and requests made from other sites.

Every request needs the access token: as the query parameter ``token`` (answered with a SameSite=Strict,
HttpOnly cookie, so the page's own links and scripts work without it), the cookie, or ``Authorization:
Bearer T``. Without a token the answer is 401; with a wrong one 403. Tokens are compared in constant time
and never logged. The Host header must name the address the app listens on (a page on another site that
resolves its name to 127.0.0.1 is turned away), and a request that changes anything (POST) must carry the
token in a header and come from the app's own origin: a form or script on another site cannot.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

COOKIE_PREFIX = "anonray_review_"
TOKEN_HEADER = "X-Anonray-Token"


def cookie_name(hosts: set[str]) -> str:
    """The cookie of the app listening on the port of ``hosts``: browsers keep cookies per host name, not per
    port, so two apps on one machine (or another local service) must not share or see one cookie."""
    ports = sorted({h.rsplit(":", 1)[-1] for h in hosts if ":" in h})
    return COOKIE_PREFIX + (ports[0] if ports else "80")


def new_token() -> str:
    """A fresh access token (256 random bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def same_token(given: str | None, token: str) -> bool:
    """Constant-time comparison of a presented token with the app's."""
    return given is not None and hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) stays on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Verdict:
    status: int
    """200 when the request may go on, else the HTTP status to answer with."""
    reason: str = ""
    set_cookie: bool = False
    """The token came as a query parameter: answer with the cookie."""


WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def machine_names() -> set[str]:
    """This machine's host names and addresses (what other machines may call it by)."""
    names = {socket.gethostname(), socket.getfqdn()}
    for name in list(names):
        with contextlib.suppress(OSError):
            names |= set(socket.gethostbyname_ex(name)[2])
    return {n for n in names if n}


def allowed_hosts(host: str, port: int) -> set[str]:
    """The Host header values the app answers: its listening address, the loopback names when it is one, and
    this machine's names and addresses when it listens on every interface."""
    names = {f"[{host}]" if ":" in host else host}
    if is_loopback(host) or host in WILDCARD_HOSTS:
        names |= {"localhost", "127.0.0.1", "[::1]"}
    if host in WILDCARD_HOSTS:
        names |= {f"[{n}]" if ":" in n else n for n in machine_names()}
    return {f"{name}:{port}" for name in names} | ({host} if port == 80 else set())


def check_request(*, method: str, host_header: str | None, query_token: str | None, cookie_token: str | None,
                  headers: Mapping[str, str], token: str, hosts: set[str]) -> Verdict:
    """Whether a request may be served (see the module docstring for the rules)."""
    if (host_header or "").lower() not in {h.lower() for h in hosts}:
        return Verdict(403, "unknown Host header")
    bearer = headers.get("Authorization", "")
    bearer = bearer[7:].strip() if bearer.lower().startswith("bearer ") else None
    header_token = headers.get(TOKEN_HEADER) or bearer
    presented = header_token or query_token or cookie_token
    if not presented:
        return Verdict(401, "the access token is required")
    if not same_token(presented, token):
        return Verdict(403, "wrong access token")
    if method not in ("GET", "HEAD"):
        if not same_token(header_token, token):
            return Verdict(403, f"a change needs the token in the {TOKEN_HEADER} or Authorization header")
        origin = headers.get("Origin")
        if origin and urlsplit(origin).netloc.lower() not in {h.lower() for h in hosts}:
            return Verdict(403, "cross-site request")
    return Verdict(200, set_cookie=bool(query_token) and same_token(query_token, token))
