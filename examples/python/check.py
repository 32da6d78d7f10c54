"""Command-line check of one assertion with the Python examples (used by sidegate's tests,
handy by hand too)::

    python check.py --jwks-url URL --issuer ISS --audience AUD [--assertion TOKEN]
                    [--header NAME] [--sso | --fastapi]

Without ``--assertion`` the request carries no assertion header. The token goes in
``--header`` (default ``X-Sidegate-Assertion``), which is also the header the verifier reads.

  (default)   sidegate_auth.SidegateVerifier.verify_headers
  --sso       custom_sso.SidegateSSOHandler.handle_custom_ui_sso_sign_in on a fake request
  --fastapi   GET /whoami on fastapi_app.create_app(), in-process (FastAPI's TestClient)

Prints one JSON line: ``{"ok": true, "identity": {...}}`` or
``{"ok": false, "error": "<reason code>", "detail": "..."}``, and exits 0 either way
(2 on a usage error).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from types import SimpleNamespace
from typing import Any

from sidegate_auth import SidegateAuthError, SidegateVerifier


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description="Verify one sidegate assertion with the examples.")
    p.add_argument("--jwks-url", required=True)
    p.add_argument("--issuer", required=True)
    p.add_argument("--audience", required=True)
    p.add_argument("--assertion", help="the token; omit it to send no assertion at all")
    p.add_argument("--header", default="X-Sidegate-Assertion", help="header that carries it")
    p.add_argument("--leeway", type=float, default=30, help="clock skew in seconds (30)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--sso", action="store_true", help="through the custom SSO handler")
    mode.add_argument("--fastapi", action="store_true", help="through the FastAPI app")
    args = p.parse_args(argv)

    try:
        verifier = SidegateVerifier(
            jwks_url=args.jwks_url,
            issuer=args.issuer,
            audience=args.audience,
            leeway=args.leeway,
            header_names=(args.header,),
        )
    except Exception as e:  # an empty issuer, a JWKS URL that is not http(s), ...
        p.error(str(e))  # exits 2
    headers = {args.header: args.assertion} if args.assertion is not None else {}
    if args.sso:
        result = _sso(verifier, headers)
    elif args.fastapi:
        result = _fastapi(verifier, headers)
    else:
        try:
            result = {"ok": True, "identity": verifier.verify_headers(headers).as_dict()}
        except SidegateAuthError as e:
            result = _refused(e)
    print(json.dumps(result), flush=True)
    return 0


def _refused(e: SidegateAuthError) -> dict[str, Any]:
    return {"ok": False, "error": e.reason.value, "detail": e.detail}


def _sso(verifier: SidegateVerifier, headers: dict[str, str]) -> dict[str, Any]:
    from custom_sso import SidegateSSOHandler

    handler = SidegateSSOHandler(verifier)
    # Anything with a `.headers` mapping will do; a plain dict is the least helpful one
    # (case-sensitive keys), so it is what the check uses.
    request = SimpleNamespace(headers=headers)
    try:
        user = asyncio.run(handler.handle_custom_ui_sso_sign_in(request))
    except PermissionError as e:
        if not isinstance(e, SidegateAuthError):
            raise
        return _refused(e)
    return {"ok": True, "identity": user.as_dict()}


def _fastapi(verifier: SidegateVerifier, headers: dict[str, str]) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from fastapi_app import create_app

    with TestClient(create_app(verifier)) as client:
        r = client.get("/whoami", headers=headers)
    body = r.json()
    if r.status_code == 200:
        return {"ok": True, "identity": body, "status": 200}
    detail = body.get("detail") if isinstance(body, dict) else None
    if not isinstance(detail, dict):
        detail = {"reason": "unexpected", "message": json.dumps(body)}
    return {
        "ok": False,
        "error": detail.get("reason"),
        "detail": detail.get("message"),
        "status": r.status_code,
        "www_authenticate": r.headers.get("www-authenticate"),
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
