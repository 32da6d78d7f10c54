"""Header-based single sign-on for an admin UI that sits behind sidegate (the "custom SSO
handler" hook that LLM gateways and similar admin UIs offer).

The UI asks the handler who is signing in; the handler reads sidegate's assertion from the
request headers, verifies it (``sidegate_auth``) and answers with the user's id, email, role
and teams. Nothing is trusted from the plain ``X-Sidegate-*`` headers.

    handler = SidegateSSOHandler(SidegateVerifier.for_public_url("https://llm.example.com"))
    user = await handler.handle_custom_ui_sso_sign_in(request)
    user.user_id, user.user_role

The role is passed through unchanged: sidegate has already mapped it to one of its
configured ``[identity] roles``, so configure those to the roles the UI knows.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Optional

from sidegate_auth import Reason, SidegateAuthError, SidegateIdentity, SidegateVerifier


class SidegateSSOError(SidegateAuthError):
    """Sign-in refused. A ``PermissionError``; ``reason`` is the ``sidegate_auth.Reason``."""


@dataclass(frozen=True)
class SSOUser:
    """The signed-in user, in the shape the admin UI consumes."""

    user_id: str
    user_email: Optional[str]
    user_role: str
    teams: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "user_email": self.user_email,
            "user_role": self.user_role,
            "teams": list(self.teams),
        }


class SidegateSSOHandler:
    """Turns a request that came through sidegate into an ``SSOUser``.

    ``user_id_claim`` picks the id: ``"user"`` (the username sidegate shows, the default) or
    ``"sub"`` (the identity provider's subject: stable, but often opaque).
    """

    def __init__(self, verifier: SidegateVerifier, *, user_id_claim: str = "user") -> None:
        if user_id_claim not in ("user", "sub"):
            raise ValueError("user_id_claim is 'user' or 'sub'")
        self._verifier = verifier
        self._user_id_claim = user_id_claim

    @classmethod
    def from_env(cls) -> "SidegateSSOHandler":
        """Configured from ``SIDEGATE_PUBLIC_URL`` etc. (``SidegateVerifier.from_env``)."""
        return cls(SidegateVerifier.from_env())

    async def handle_custom_ui_sso_sign_in(self, request: Any) -> SSOUser:
        """Who is signing in. ``request`` is a Starlette/FastAPI ``Request`` or anything with a
        ``.headers`` mapping. Raises ``SidegateSSOError`` when the assertion is missing,
        expired, meant for another audience, signed by an unknown key or otherwise invalid."""
        headers = getattr(request, "headers", None)
        if headers is None:
            raise TypeError("request has no .headers")
        try:
            # The verifier may fetch the JWKS (blocking urllib): keep it off the event loop.
            identity = await asyncio.to_thread(self._verifier.verify_headers, headers)
        except SidegateAuthError as e:
            raise SidegateSSOError(e.reason, e.detail) from None
        return self._user(identity)

    def _user(self, identity: SidegateIdentity) -> SSOUser:
        return SSOUser(
            user_id=identity.user if self._user_id_claim == "user" else identity.sub,
            user_email=identity.email,
            user_role=identity.role,
            teams=list(identity.teams),
        )


_default_handler: Optional[SidegateSSOHandler] = None


async def handle_custom_ui_sso_sign_in(request: Any) -> SSOUser:
    """Module-level entry point for UIs configured with a function path, e.g.
    ``custom_sso.handle_custom_ui_sso_sign_in``; uses ``SidegateSSOHandler.from_env()``."""
    global _default_handler
    if _default_handler is None:
        _default_handler = SidegateSSOHandler.from_env()
    return await _default_handler.handle_custom_ui_sso_sign_in(request)


__all__ = [
    "Reason",
    "SSOUser",
    "SidegateSSOError",
    "SidegateSSOHandler",
    "handle_custom_ui_sso_sign_in",
]
