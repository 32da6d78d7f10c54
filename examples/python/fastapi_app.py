"""A tiny FastAPI app behind sidegate: every route that depends on ``require_identity`` gets
the verified ``SidegateIdentity``, or the caller gets 401 with the reason code.

Run (from this directory, with sidegate in front on http://127.0.0.1:4180)::

    SIDEGATE_PUBLIC_URL=http://127.0.0.1:4180 uvicorn fastapi_app:app --host 127.0.0.1 --port 8000

and set sidegate's ``[upstream] url = "http://127.0.0.1:8000"``.
"""

from __future__ import annotations

import functools
import logging
from typing import Annotated, Optional

from fastapi import Depends, FastAPI, HTTPException, Request

from sidegate_auth import Reason, SidegateAuthError, SidegateIdentity, SidegateVerifier

log = logging.getLogger("fastapi_app")


@functools.lru_cache(maxsize=1)
def _verifier_from_env() -> SidegateVerifier:
    return SidegateVerifier.from_env()


def require_identity(request: Request) -> SidegateIdentity:
    """FastAPI dependency: the verified identity, or 401 (503 when sidegate's keys cannot be
    fetched, which is our problem, not the caller's).

    A plain ``def``: FastAPI runs it in its thread pool, where the blocking JWKS fetch is fine.
    The response names the reason code only; what exactly failed goes to the log.
    """
    verifier: Optional[SidegateVerifier] = getattr(request.app.state, "sidegate", None)
    if verifier is None:
        verifier = _verifier_from_env()
    try:
        return verifier.verify_headers(request.headers)
    except SidegateAuthError as e:
        log.warning(
            "refused %s %s: %s: %s", request.method, request.url.path, e.reason.value, e.detail
        )
        if e.reason is Reason.JWKS_UNAVAILABLE:
            raise HTTPException(503, detail={"reason": e.reason.value, "message": e.reason.message})
        raise HTTPException(
            401,
            detail={"reason": e.reason.value, "message": e.reason.message},
            headers={"WWW-Authenticate": 'Sidegate realm="app"'},
        )


Identity = Annotated[SidegateIdentity, Depends(require_identity)]


def create_app(verifier: Optional[SidegateVerifier] = None) -> FastAPI:
    """The app; ``verifier`` defaults to one configured from ``SIDEGATE_*`` variables (see
    ``SidegateVerifier.from_env``), built at the first request."""
    app = FastAPI(title="sidegate example")
    app.state.sidegate = verifier

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    @app.get("/whoami")
    def whoami(identity: Identity) -> dict:
        return identity.as_dict()

    @app.get("/")
    def index(identity: Identity) -> dict:
        teams = ", ".join(identity.teams) or "no team"
        return {"message": f"Hello {identity.user} ({identity.role}; {teams})"}

    return app


app = create_app()
