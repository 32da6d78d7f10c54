#!/usr/bin/env python3
"""Log in through sidegate like a browser and print the session Cookie header.

The flow, against the test OP (tests/idp/provider.mjs, devInteractions):

  1. GET the protected URL (Accept: text/html)  -> 302 to the OP
  2. follow the OP's redirects                  -> login form (prompt=login)
  3. POST login/password
  4. POST the consent form
  5. redirect to sidegate's /.sidegate/oidc/callback -> 302 to the protected URL
  6. the protected URL answers 200

then print the cookies sidegate set, as one Cookie header value, and check
that a fresh client sending only that header gets 200. Every request and the
whole flow are bounded in count and time. Needs `requests`.

The same flow logs in through the other proxies bench/bench.sh measures, given
the path the IdP sends the browser back to (--callback): Apache +
mod_auth_openidc (/redirect_uri), and SAML SPs against the bench's
SimpleSAMLphp IdP, whose login form (username, password) answers with a form
that POSTs the SAMLResponse to the SP: sidegate (/.sidegate/saml/acs),
Apache + mod_auth_mellon (/mellon/postResponse).

  bench/login.py http://127.0.0.1:4180/
  bench/login.py --user bob http://127.0.0.1:4180/some/page
  bench/login.py --callback /mellon/postResponse http://127.0.0.1:8083/
  curl -H "Cookie: $(bench/login.py http://127.0.0.1:4180/)" http://127.0.0.1:4180/
"""
from __future__ import annotations

import argparse
import sys
import time
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

try:
    import requests
except ImportError:  # pragma: no cover
    sys.exit("login.py: the Python package 'requests' is missing (pip install requests)")

CALLBACK_PATH = "/.sidegate/oidc/callback"   # default of --callback
MAX_HOPS = 30   # redirects + form posts, whole flow
MAX_FORMS = 4   # login, consent, spare
# sidegate answers an unauthenticated non-browser request with 401, not 302
BROWSER_ACCEPT = "text/html,application/xhtml+xml,*/*;q=0.8"


class LoginError(Exception):
    pass


class FormParser(HTMLParser):
    """Collects <form> elements with their named <input> values."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict] = []
        self._cur: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = {k: (v if v is not None else "") for k, v in attrs}
        if tag == "form":
            self._cur = {"action": a.get("action", ""), "method": a.get("method", "get").lower(),
                         "fields": {}, "names": set()}
            self.forms.append(self._cur)
        elif self._cur is not None and tag in ("input", "textarea", "select"):
            name = a.get("name")
            typ = a.get("type", "text").lower()
            if not name or typ in ("submit", "button", "image", "reset"):
                return
            if typ in ("checkbox", "radio") and "checked" not in a:
                return
            self._cur["fields"][name] = a.get("value", "")
            self._cur["names"].add(name)

    def handle_endtag(self, tag):
        if tag == "form":
            self._cur = None


def origin(url: str) -> str:
    s = urlsplit(url)
    return f"{s.scheme}://{s.netloc}".lower()


def snippet(resp: requests.Response, n: int = 300) -> str:
    text = " ".join((resp.text if resp.content else "").split())
    return text[:n] + ("..." if len(text) > n else "")


class Flow:
    def __init__(self, args):
        self.a = args
        self.s = requests.Session()
        self.s.headers.update({"User-Agent": args.user_agent, "Accept": BROWSER_ACCEPT})
        self.proxy_origin = origin(args.url)
        self.proxy_cookie_names: list[str] = []
        self.hops = 0
        self.forms = 0
        self.login_posted = False
        self.callback_seen = False
        self.t0 = time.monotonic()

    def log(self, msg: str) -> None:
        if self.a.verbose:
            print(f"[login {time.monotonic() - self.t0:6.3f}s] {msg}", file=sys.stderr)

    def request(self, method: str, url: str, step: str, **kw) -> requests.Response:
        self.hops += 1
        if self.hops > MAX_HOPS:
            raise LoginError(f"more than {MAX_HOPS} redirects/forms (loop?) at: {step}")
        if time.monotonic() - self.t0 > self.a.total_timeout:
            raise LoginError(f"flow took longer than {self.a.total_timeout}s, giving up at: {step}")
        try:
            r = self.s.request(method, url, allow_redirects=False, timeout=self.a.timeout, **kw)
        except requests.RequestException as e:
            raise LoginError(f"{step}: {method} {url} failed: {e}") from None
        self.log(f"{method} {url} -> {r.status_code}")
        if origin(url) == self.proxy_origin:
            if urlsplit(url).path == self.a.callback:
                self.callback_seen = True
                if r.status_code >= 400:
                    raise LoginError(f"the proxy's {self.a.callback} answered HTTP {r.status_code}: {snippet(r)}")
            for c in r.cookies:
                if c.name not in self.proxy_cookie_names:
                    self.proxy_cookie_names.append(c.name)
        return r

    def run(self) -> str:
        url = self.a.url
        r = self.request("GET", url, "step 1 (unauthenticated request to the proxy)")
        if r.status_code == 200:
            raise LoginError(f"step 1: {url} answered 200 without a login: is it a public path?")
        if not r.is_redirect:
            raise LoginError(f"step 1: expected a redirect (to the IdP) from {url}, got HTTP {r.status_code}: {snippet(r)}")

        while True:
            if r.is_redirect:
                nxt = urljoin(r.url, r.headers["Location"])
                step = "redirect to the proxy" if origin(nxt) == self.proxy_origin else "redirect to the IdP"
                r = self.request("GET", nxt, step)
                continue
            here = origin(r.url)
            if here == self.proxy_origin and r.status_code == 200 and self._is_target(r.url):
                self.log(f"back on the protected URL with 200 ({len(r.content)} bytes)")
                break
            if here != self.proxy_origin and r.status_code == 200 and self._is_form_page(r):
                r = self.submit_form(r)
                continue
            if r.status_code == 401 and self.login_posted and here != self.proxy_origin:
                raise LoginError(f"the IdP rejected the login of '{self.a.user}' (HTTP 401): {snippet(r)}")
            where = "the proxy" if here == self.proxy_origin else "the IdP"
            raise LoginError(f"unexpected HTTP {r.status_code} from {where} at {r.url}: {snippet(r)}")

        if not self.callback_seen:
            raise LoginError(f"the flow never went through the proxy's {self.a.callback}")
        cookies = self.collect_cookies()
        if not cookies:
            raise LoginError("login finished but the proxy left no cookie set")
        header = "; ".join(f"{k}={v}" for k, v in cookies)
        if self.a.verify:
            self.verify(header)
        return header

    def _is_target(self, url: str) -> bool:
        want, got = urlsplit(self.a.url), urlsplit(url)
        return (want.path or "/") == (got.path or "/")

    @staticmethod
    def _is_form_page(r: requests.Response) -> bool:
        return "html" in r.headers.get("Content-Type", "") and b"<form" in r.content.lower()

    def submit_form(self, r: requests.Response) -> requests.Response:
        self.forms += 1
        if self.forms > MAX_FORMS:
            raise LoginError(f"more than {MAX_FORMS} forms in one flow; last page {r.url}: {snippet(r)}")
        p = FormParser()
        p.feed(r.text)
        if not p.forms:
            raise LoginError(f"no parsable form at {r.url}: {snippet(r)}")
        form = p.forms[0]
        fields = dict(form["fields"])
        action = urljoin(r.url, form["action"] or r.url)
        # the test OP's form (prompt=login; login, password) or SimpleSAMLphp's (username, password)
        user_field = "login" if fields.get("prompt") == "login" else (
            "username" if {"username", "password"} <= form["names"] else None)
        is_login = user_field is not None
        if is_login:
            if self.login_posted:
                raise LoginError(f"the login form came back: the IdP did not accept user '{self.a.user}'")
            self.login_posted = True
            fields[user_field] = self.a.user
            fields["password"] = self.a.password
            step = f"login form (user {self.a.user})"
        elif fields.get("prompt") == "consent":
            step = "consent form"
        elif "SAMLResponse" in fields:
            step = "SAML POST binding form (SAMLResponse to the SP)"
        else:
            step = f"form ({', '.join(sorted(form['names'])) or 'no fields'})"
        self.log(f"submitting {step} -> {form['method'].upper()} {action}")
        if form["method"] == "post":
            resp = self.request("POST", action, step, data=fields)
        else:
            resp = self.request("GET", action, step, params=fields)
        if resp.status_code >= 400 and not (resp.status_code == 401 and is_login):
            raise LoginError(f"{step}: HTTP {resp.status_code} from {action}: {snippet(resp)}")
        return resp

    def collect_cookies(self) -> list[tuple[str, str]]:
        host = urlsplit(self.a.url).hostname or ""
        out = []
        for c in self.s.cookies:
            if c.domain.lstrip(".") != host and not host.endswith(c.domain):
                continue
            if c.name in self.proxy_cookie_names:
                out.append((c.name, c.value))
        return out

    def verify(self, header: str) -> None:
        """A fresh client with only the printed cookies must get 200 on the URL."""
        try:
            r = requests.get(self.a.url, allow_redirects=False, timeout=self.a.timeout,
                             headers={"Cookie": header, "User-Agent": self.a.user_agent,
                                      "Accept": BROWSER_ACCEPT})
        except requests.RequestException as e:
            raise LoginError(f"verify: GET {self.a.url} with the cookie failed: {e}") from None
        if r.status_code != 200:
            raise LoginError(f"verify: GET {self.a.url} with only the printed cookie(s) answered "
                             f"HTTP {r.status_code}, not 200 (Location: {r.headers.get('Location')})")
        self.log(f"verified: the cookie alone gets 200 from {self.a.url}")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url", help="protected URL on sidegate (or another proxy), e.g. http://127.0.0.1:4180/")
    ap.add_argument("--callback", default=CALLBACK_PATH, metavar="PATH",
                    help="path on the proxy the flow must pass through: its OIDC redirect URI "
                         f"or SAML ACS (default {CALLBACK_PATH})")
    ap.add_argument("--user", default="alice", help="login (default alice)")
    ap.add_argument("--password", default=None, help="password (default <user>-pw)")
    ap.add_argument("--no-verify", dest="verify", action="store_false",
                    help="skip the final check that the cookie alone gets 200")
    ap.add_argument("--timeout", type=float, default=10.0, help="per request, seconds (default 10)")
    ap.add_argument("--total-timeout", type=float, default=60.0, help="whole flow, seconds (default 60)")
    ap.add_argument("--user-agent", default="sidegate-bench-login/1.0 (python-requests)")
    ap.add_argument("-v", "--verbose", action="store_true", help="log each step to stderr")
    return ap


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    if args.password is None:
        args.password = f"{args.user}-pw"
    return args


def _loop(job):
    """One client of `rate`: flows back to back until the deadline or the cap."""
    argv, deadline, cap = job
    ok, failed, first_error = 0, 0, ""
    while time.monotonic() < deadline and ok + failed < cap:
        try:
            Flow(parse_args(argv)).run()
            ok += 1
        except Exception as e:  # noqa: BLE001 -- counted and reported, the others go on
            failed += 1
            first_error = first_error or f"{type(e).__name__}: {e}"[:300]
    return ok, failed, first_error


def rate(argv, clients: int, seconds: float, cap: int = 2000):
    """Full flows from `clients` processes at once (each its own Python, so the client side
    is not one GIL), none started after `seconds`, at most `cap` each. Returns
    (completed, failed, elapsed seconds until the last ended, first error)."""
    import multiprocessing
    start = time.monotonic()
    jobs = [(argv, start + seconds, cap)] * clients
    with multiprocessing.get_context("fork").Pool(clients) as pool:
        results = pool.map(_loop, jobs)
    elapsed = time.monotonic() - start
    errors = [e for _, _, e in results if e]
    return (sum(r[0] for r in results), sum(r[1] for r in results), elapsed,
            errors[0] if errors else "")


def main(argv=None) -> int:
    try:
        print(Flow(parse_args(argv)).run())
    except LoginError as e:
        print(f"login.py: FAILED: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
