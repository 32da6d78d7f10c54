#!/usr/bin/env python3
"""Signs in to a sidegate's local account COUNT times (bench / bench-pw, see local_account in
bench/lib.sh), each a distinct session, with WORKERS parallel clients; writes the session
cookies (`_sidegate=...`, one per line) to OUT. Used by memory.sh (its sessions) and by
bench.sh's ORDER mode (the sign-in code's symbol order).

    local-signin.py BASE_URL COUNT WORKERS OUT
"""
import http.client, multiprocessing, re, sys, urllib.parse
base, count, workers, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
u = urllib.parse.urlsplit(base)

def cookies_of(resp):
    return [h.split(";", 1)[0] for k, h in resp.getheaders() if k.lower() == "set-cookie"]

def sign_in(c):
    c.request("GET", "/.sidegate/start?provider=local&rd=%2F", headers={"Accept": "text/html"})
    r = c.getresponse(); page = r.read().decode()
    if r.status != 200:
        raise SystemExit(f"sign-in form: HTTP {r.status}")
    jar = "; ".join(x for x in cookies_of(r) if not x.endswith("="))
    action = re.search(r'<form[^>]*action="([^"]+)"', page).group(1).replace("&amp;", "&")
    fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page))
    fields.update(username="bench", password="bench-pw")
    body = urllib.parse.urlencode(fields)
    c.request("POST", action, body=body, headers={"Cookie": jar, "Accept": "text/html",
              "Content-Type": "application/x-www-form-urlencoded"})
    r = c.getresponse(); r.read()
    got = [x for x in cookies_of(r) if x.startswith("_sidegate=") and not x.endswith("=")]
    if r.status not in (302, 303) or len(got) != 1:
        raise SystemExit(f"sign-in: HTTP {r.status}, session cookies {len(got)}")
    return got[0]

def work(n):
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    return [sign_in(c) for _ in range(n)]

per = [count // workers + (1 if i < count % workers else 0) for i in range(workers)]
with multiprocessing.Pool(workers) as p:
    cookies = [x for part in p.map(work, per) for x in part]
if len(set(cookies)) != count:
    raise SystemExit(f"{len(set(cookies))} distinct sessions, expected {count}")
open(out, "w").write("\n".join(cookies) + "\n")
