"""Verify the identity sidegate forwards to your app, with PyJWT.

sidegate adds ``X-Sidegate-Assertion`` to every request it lets through: a short-lived JWT
signed with sidegate's own key, whose public half is at ``<public_url>/.sidegate/jwks.json``.
This module checks that token and turns it into a ``SidegateIdentity``::

    verifier = SidegateVerifier.for_public_url("https://app.example.com")
    identity = verifier.verify_headers(request.headers)   # raises SidegateAuthError
    identity.user, identity.role, identity.teams

What is checked, in order: an assertion is present (exactly one value); its ``alg`` is ES256
or EdDSA (never ``none`` or HS*); its ``kid`` names a key of the JWKS (fetched once, cached,
refetched on an unknown ``kid`` at most every ``jwks_refetch_interval`` seconds); the
signature; ``iss`` is sidegate's public origin; ``aud`` is your audience; ``exp`` and ``iat``
(with ``leeway`` seconds of clock skew); and the identity claims have the right types.

The plain ``X-Sidegate-User``/``-Role``/... headers are not read here: they carry no
signature, so trust them only if nothing but sidegate can reach the app.

Blocking: the JWKS is fetched with urllib, so call ``verify`` from a thread (a sync FastAPI
dependency, ``asyncio.to_thread``), not directly in an event loop.
"""

from __future__ import annotations

import enum
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence
from urllib.parse import urlsplit

import jwt

ASSERTION_HEADER = "X-Sidegate-Assertion"
# With `[assertion] compat_headers = ["pomerium", "iap"]` sidegate sends the same token under
# these names too, for apps that already read them.
POMERIUM_HEADER = "X-Pomerium-Jwt-Assertion"
IAP_HEADER = "X-Goog-Iap-Jwt-Assertion"

# What sidegate signs with. A fixed list, never taken from the token (RFC 8725, 2.1).
ALGORITHMS = ("ES256", "EdDSA")
# Registered claims that must be present; `user`, `role` and `teams` are checked below.
REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub")


class Reason(str, enum.Enum):
    """Why an assertion was refused. The value is a stable code, safe to show to a caller."""

    MISSING = "missing"
    MALFORMED = "malformed"
    BAD_ALGORITHM = "bad_algorithm"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_AUDIENCE = "wrong_audience"
    WRONG_ISSUER = "wrong_issuer"
    BAD_CLAIMS = "bad_claims"
    JWKS_UNAVAILABLE = "jwks_unavailable"
    INVALID = "invalid"

    @property
    def message(self) -> str:
        """A short sentence for a 401 page or an API error (no token content, no config)."""
        return _MESSAGES[self]


_MESSAGES = {
    Reason.MISSING: "no identity assertion: the request did not come through sidegate",
    Reason.MALFORMED: "the identity assertion is not a well-formed JWT",
    Reason.BAD_ALGORITHM: "the identity assertion uses an algorithm that is not accepted",
    Reason.UNKNOWN_KEY: "the identity assertion is signed by a key sidegate does not publish",
    Reason.BAD_SIGNATURE: "the identity assertion's signature does not verify",
    Reason.EXPIRED: "the identity assertion has expired",
    Reason.NOT_YET_VALID: "the identity assertion is dated in the future (check the clocks)",
    Reason.WRONG_AUDIENCE: "the identity assertion was issued for another application",
    Reason.WRONG_ISSUER: "the identity assertion was issued by another sidegate",
    Reason.BAD_CLAIMS: "the identity assertion lacks a required claim or has one of the wrong type",
    Reason.JWKS_UNAVAILABLE: "sidegate's signing keys could not be fetched",
    Reason.INVALID: "the identity assertion is invalid",
}


class SidegateAuthError(PermissionError):
    """The request carries no acceptable assertion.

    ``reason`` is a ``Reason`` (a stable code); ``detail`` says what exactly failed and is
    meant for logs, not for the caller.
    """

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail or reason.message


@dataclass(frozen=True)
class SidegateIdentity:
    """Who is making the request, as sidegate established it at login.

    ``role`` is already mapped by sidegate to one of its configured roles; ``idp`` is the
    issuer of the identity provider the user signed in with; ``sub`` is the subject there.
    """

    user: str
    email: Optional[str]
    role: str
    teams: tuple[str, ...]
    sub: str
    idp: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "email": self.email,
            "role": self.role,
            "teams": list(self.teams),
            "sub": self.sub,
            "idp": self.idp,
        }


def public_origin(url: str) -> str:
    """The origin sidegate uses as ``iss``: scheme and host (lower case), non-default port."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"sidegate's public URL is an origin, without a path: {url!r}")
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    default_port = 443 if parts.scheme == "https" else 80
    port = "" if parts.port in (None, default_port) else f":{parts.port}"
    return f"{parts.scheme}://{host}{port}"


def header_values(headers: Any, name: str) -> list[str]:
    """Every value of header ``name`` (any case) in ``headers``.

    Works with Starlette/Werkzeug headers (``getlist``), aiohttp/multidict (``getall``) and a
    plain mapping such as a dict.
    """
    if hasattr(headers, "getlist"):
        return list(headers.getlist(name))
    if hasattr(headers, "getall"):
        return list(headers.getall(name, []))
    wanted = name.lower()
    out: list[str] = []
    for key, value in headers.items():
        if str(key).lower() == wanted:
            out.extend(value if isinstance(value, (list, tuple)) else [value])
    return out


class SidegateVerifier:
    """Checks sidegate assertions for one deployment. Thread-safe; create one and reuse it
    (it holds the JWKS cache).

    ``issuer`` is sidegate's public origin; ``audience`` is ``[assertion] audience`` in
    sidegate's config (by default the public origin too). ``jwks_url`` may point at an
    internal address of sidegate, as long as it serves the same keys.
    """

    def __init__(
        self,
        *,
        jwks_url: str,
        issuer: str,
        audience: str,
        leeway: float = 30,
        jwks_cache_seconds: float = 300,
        jwks_refetch_interval: float = 30,
        timeout: float = 5,
        header_names: Sequence[str] = (ASSERTION_HEADER,),
    ) -> None:
        if not issuer or not audience:
            raise ValueError("issuer and audience are required")
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.header_names = tuple(header_names)
        self._refetch_interval = jwks_refetch_interval
        # PyJWKClient fetches and parses the JWKS and keeps it for `lifespan` seconds. The
        # lookup by kid is ours (see `_signing_key`) so that an unknown kid is told apart
        # from an unreachable JWKS.
        self._jwks = jwt.PyJWKClient(
            jwks_url,
            cache_jwk_set=True,
            lifespan=jwks_cache_seconds,
            timeout=timeout,
        )
        self._refetch_lock = threading.Lock()
        self._last_refetch = float("-inf")

    @classmethod
    def for_public_url(
        cls, public_url: str, audience: Optional[str] = None, **kwargs: Any
    ) -> "SidegateVerifier":
        """The usual set-up: JWKS at ``<public_url>/.sidegate/jwks.json``, ``iss`` = the
        public origin, ``aud`` = ``audience`` or the public origin (sidegate's default)."""
        origin = public_origin(public_url)
        kwargs.setdefault("jwks_url", f"{origin}/.sidegate/jwks.json")
        return cls(issuer=origin, audience=audience or origin, **kwargs)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "SidegateVerifier":
        """Reads ``SIDEGATE_PUBLIC_URL`` (required), ``SIDEGATE_AUDIENCE`` and
        ``SIDEGATE_JWKS_URL`` (both optional, see ``for_public_url``)."""
        public_url = environ.get("SIDEGATE_PUBLIC_URL", "").strip()
        if not public_url:
            raise RuntimeError(
                "set SIDEGATE_PUBLIC_URL to sidegate's public URL, e.g. https://app.example.com"
            )
        kwargs: dict[str, Any] = {}
        if environ.get("SIDEGATE_JWKS_URL", "").strip():
            kwargs["jwks_url"] = environ["SIDEGATE_JWKS_URL"].strip()
        return cls.for_public_url(
            public_url, environ.get("SIDEGATE_AUDIENCE", "").strip() or None, **kwargs
        )

    def verify_headers(self, headers: Any) -> SidegateIdentity:
        """Finds the assertion in ``headers`` (see ``header_values``) and verifies it."""
        values: list[str] = []
        for name in self.header_names:
            values.extend(v.strip() for v in header_values(headers, name))
        values = [v for v in values if v]
        if not values:
            raise SidegateAuthError(
                Reason.MISSING, f"no {' or '.join(self.header_names)} header"
            )
        if len(set(values)) > 1:
            # sidegate sends one token (the compat names carry the same one): two different
            # values mean something else added a header on the way.
            raise SidegateAuthError(Reason.MALFORMED, "more than one different assertion")
        return self.verify(values[0])

    def verify(self, token: Optional[str]) -> SidegateIdentity:
        """Verifies one compact JWS and returns the identity it asserts."""
        if not token:
            raise SidegateAuthError(Reason.MISSING, "empty assertion")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise SidegateAuthError(Reason.MALFORMED, str(e)) from None
        # Refuse a wrong alg before any key lookup: `none` and HS* never get near a key.
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise SidegateAuthError(Reason.BAD_ALGORITHM, f"alg {alg!r} is not one of {ALGORITHMS}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise SidegateAuthError(Reason.UNKNOWN_KEY, "the header names no kid")
        key = self._signing_key(kid)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=list(ALGORITHMS),
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError as e:
            raise SidegateAuthError(Reason.EXPIRED, str(e)) from None
        except jwt.ImmatureSignatureError as e:
            raise SidegateAuthError(Reason.NOT_YET_VALID, str(e)) from None
        except jwt.InvalidAudienceError as e:
            raise SidegateAuthError(Reason.WRONG_AUDIENCE, str(e)) from None
        except jwt.InvalidIssuerError as e:
            raise SidegateAuthError(Reason.WRONG_ISSUER, str(e)) from None
        except (
            jwt.MissingRequiredClaimError,
            jwt.InvalidIssuedAtError,
            jwt.exceptions.InvalidSubjectError,
            jwt.exceptions.InvalidJTIError,
        ) as e:
            raise SidegateAuthError(Reason.BAD_CLAIMS, str(e)) from None
        except jwt.InvalidAlgorithmError as e:
            raise SidegateAuthError(Reason.BAD_ALGORITHM, str(e)) from None
        except jwt.InvalidSignatureError as e:
            raise SidegateAuthError(Reason.BAD_SIGNATURE, str(e)) from None
        except jwt.DecodeError as e:
            raise SidegateAuthError(Reason.MALFORMED, str(e)) from None
        except jwt.PyJWTError as e:
            raise SidegateAuthError(Reason.INVALID, f"{type(e).__name__}: {e}") from None
        return _identity(claims)

    def _signing_key(self, kid: str) -> jwt.PyJWK:
        key = _find(self._keys(refresh=False), kid)
        if key is not None:
            return key
        # A kid we have not seen: sidegate may have rotated its key since the last fetch.
        # Refetch, but at most once per interval, so that tokens with made-up kids cannot
        # turn every request into a JWKS fetch.
        with self._refetch_lock:
            now = time.monotonic()
            if now - self._last_refetch >= self._refetch_interval:
                self._last_refetch = now
                key = _find(self._keys(refresh=True), kid)
            else:
                key = _find(self._keys(refresh=False), kid)
        if key is None:
            raise SidegateAuthError(Reason.UNKNOWN_KEY, f"kid {kid!r} is not in the JWKS")
        return key

    def _keys(self, refresh: bool) -> list[jwt.PyJWK]:
        try:
            return self._jwks.get_signing_keys(refresh=refresh)
        except (jwt.PyJWKClientError, jwt.PyJWKSetError) as e:
            raise SidegateAuthError(Reason.JWKS_UNAVAILABLE, str(e)) from None


def _find(keys: Iterable[jwt.PyJWK], kid: str) -> Optional[jwt.PyJWK]:
    return next((k for k in keys if k.key_id == kid), None)


def _identity(claims: Mapping[str, Any]) -> SidegateIdentity:
    def text(name: str, optional: bool = False) -> Optional[str]:
        value = claims.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            raise SidegateAuthError(Reason.BAD_CLAIMS, f"claim {name!r} must be a non-empty string")
        return value

    teams = claims.get("teams")
    if not isinstance(teams, list) or not all(isinstance(t, str) for t in teams):
        raise SidegateAuthError(Reason.BAD_CLAIMS, "claim 'teams' must be an array of strings")
    idp = claims.get("idp")
    if not isinstance(idp, str):
        raise SidegateAuthError(Reason.BAD_CLAIMS, "claim 'idp' must be a string")
    return SidegateIdentity(
        user=text("user"),  # type: ignore[arg-type]
        email=text("email", optional=True),
        role=text("role"),  # type: ignore[arg-type]
        teams=tuple(teams),
        sub=text("sub"),  # type: ignore[arg-type]
        idp=idp,
    )
