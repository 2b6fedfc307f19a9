"""Which web pages may use this server: its own (same origin) and those the operator named
(`serve --allow-origin`). Without this, any page the user visits could open the realtime socket
or post to /v1 from their browser and talk, read replies and memories as them."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware

from ui.errors import error_body

__all__ = ["OriginPolicy", "guard_origins", "normalize_origin"]


def normalize_origin(origin: str) -> str:
    """`scheme://host[:port]` in lower case, as browsers send it; raises ValueError otherwise."""
    if origin == "*":
        return origin
    parts = urlsplit(origin.strip().rstrip("/"))
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
        raise ValueError(f"an origin is scheme://host[:port], like http://localhost:3000: not {origin!r}")
    return f"{parts.scheme}://{parts.netloc}".lower()


class OriginPolicy:
    """Same origin always; `allowed` ("*": any) besides. A request without an Origin header is not
    from a web page's script (the openai client, `assistant talk`, curl) and is let through."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self.allowed = frozenset(normalize_origin(o) for o in allowed)

    def allows(self, origin: str | None, host: str | None) -> bool:
        if origin is None:
            return True
        if "*" in self.allowed:
            return True
        parts = urlsplit(origin.lower())
        if host and parts.netloc == host.lower():
            return True  # the server's own page
        return f"{parts.scheme}://{parts.netloc}" in self.allowed


class _OriginGuard:
    """Pure ASGI (BaseHTTPMiddleware would hide a client's hang-up from the routes, which cancel on it)."""

    def __init__(self, app, policy: OriginPolicy, prefix: str) -> None:
        self.app, self.policy, self.prefix = app, policy, prefix

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            if not self.policy.allows(origin, headers.get("host")):
                response = JSONResponse(
                    error_body(f"requests from pages of {origin} are not allowed (serve --allow-origin)",
                               "origin_not_allowed"),
                    status_code=403,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def guard_origins(app: FastAPI, policy: OriginPolicy, prefix: str = "/v1") -> None:
    """Refuse (403) HTTP requests under `prefix` from pages of other origins, and answer CORS for the
    allowed ones (preflights included). WebSockets are checked by their route (ui/realtime.py)."""

    if policy.allowed:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=sorted(policy.allowed),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    app.add_middleware(_OriginGuard, policy=policy, prefix=prefix)  # added last: it runs first
