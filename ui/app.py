"""One FastAPI app: the HTTP API at /v1 (and the web UI at / when built), one engine for all.

The engine is loaded when the server starts, never at import. API keys map to users; without a
key a request gets 401, unless it comes from loopback and the operator allowed that.
"""

from __future__ import annotations

import ipaddress
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from assistant.config import EngineConfig
from assistant.engine import Engine, load_engine
from assistant.errors import AssistantError
from audio.isolated import TranscriberProcess
from ui.api import ApiError, ApiState, assistant_error_response, error_body, make_api_router
from ui.origins import OriginPolicy, guard_origins
from ui.realtime import make_realtime_router

__all__ = ["ServeConfig", "create_app"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeConfig:
    engine: EngineConfig
    api_keys: dict[str, str] = field(default_factory=dict)  # key -> user name
    allow_anonymous_loopback: bool = False  # the operator opts in (serve --allow-anonymous-loopback)
    anonymous_user: str = "local"
    model_name: str = "assistant"
    data_dir: str | None = None  # None: the platform's user data folder
    database: str | None = None  # a postgresql:// URL; None: SQLite in the data dir
    web_ui: bool = True
    allowed_origins: tuple[str, ...] = ()  # web pages besides the server's own that may use /v1 ("*": any)
    search_url: str | None = None  # a SearxNG instance Deep Search also searches; None: offline sources only


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def create_app(config: ServeConfig, engine: Engine | None = None) -> FastAPI:
    """The server app. Pass `engine` to share one already loaded (tests, embedding)."""
    holder: dict[str, Engine] = {}

    from assistant.config import default_data_dir
    from memory import open_store

    store = open_store(config.data_dir or default_data_dir(), database=config.database)
    # files are transcribed in a child process (started at the first one): CTranslate2 in this
    # process would slow the engine's torch kernels for good (see audio.isolated)
    transcriber = TranscriberProcess()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        own = engine is None
        holder["engine"] = engine or load_engine(config.engine)
        state.engine = holder["engine"]
        log.info("serving %s", config.model_name)
        yield
        if own:
            holder["engine"].close()
        transcriber.close()
        store.close()

    app = FastAPI(title="assistant", lifespan=lifespan)
    origins = OriginPolicy(config.allowed_origins)
    guard_origins(app, origins)
    state = ApiState(engine=engine, model_name=config.model_name, store=store,  # engine set at start-up
                     transcriber=transcriber, search_url=config.search_url)

    async def authenticate(request: Request) -> str:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            key = auth[7:].strip()
            if key in config.api_keys:
                return config.api_keys[key]
            raise ApiError(401, "invalid API key", "invalid_api_key")
        if config.allow_anonymous_loopback and _is_loopback(request.client.host if request.client else None):
            return config.anonymous_user
        raise ApiError(401, "missing API key: send Authorization: Bearer <key>", "invalid_api_key")

    app.include_router(make_api_router(state, authenticate))

    def identify(ws: WebSocket) -> str | None:
        """The realtime socket's user: a Bearer key, or `?api_key=` (browsers cannot set headers)."""
        auth = ws.headers.get("authorization", "")
        key = auth[7:].strip() if auth.lower().startswith("bearer ") else ws.query_params.get("api_key")
        if key:
            return config.api_keys.get(key)
        # Like the web UI's Chat and Voice tabs: with no keys at all, this machine's own pages (the
        # Origin check ran first) and programs use it as the anonymous user; with keys, only if allowed.
        open_ui = not config.api_keys or config.allow_anonymous_loopback
        if open_ui and _is_loopback(ws.client.host if ws.client else None):
            return config.anonymous_user
        return None

    app.include_router(make_realtime_router(lambda: holder["engine"], store, identify, config.engine.max_new_tokens,
                                            origins=origins))

    @app.exception_handler(ApiError)
    async def api_error(_: Request, err: ApiError) -> JSONResponse:
        # A body refused for its size is not read further: closing the connection stops the client
        # sending it (kept open, the server would have to read the rest, up to any size, to drop it).
        headers = {"Connection": "close"} if err.status == 413 else None
        return JSONResponse(error_body(err.message, err.code, err.type), status_code=err.status, headers=headers)

    @app.exception_handler(AssistantError)
    async def assistant_error(_: Request, err: AssistantError) -> JSONResponse:
        return assistant_error_response(err)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        # A bug, not the client's fault: log it, answer in the API's own shape, keep serving.
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body("internal error; see the server log", "internal", "server_error"), status_code=500
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(f"invalid request: {err.errors()[:1]}", "bad_input"), status_code=400)

    @app.get("/health")
    async def health() -> dict:
        eng = holder.get("engine")
        m = eng.metrics if eng else None
        return {
            "status": "ok" if eng else "starting",
            "turns_done": m.turns_done if m else 0,
            "turns_cancelled": m.turns_cancelled if m else 0,
            "turns_failed": m.turns_failed if m else 0,
            "max_batch": m.max_batch if m else 0,
        }

    if config.web_ui:  # last: the UI is mounted at /, behind every route above
        from ui.web import mount_web_ui

        logins = [(user, key) for key, user in config.api_keys.items()]  # user name + API key as password
        app = mount_web_ui(app, lambda: holder["engine"], store, logins=logins, anonymous_user=config.anonymous_user,
                           max_new_tokens=config.engine.max_new_tokens, transcriber=transcriber)
    return app
