#!/usr/bin/env python3
"""Drives headless Chromium through .ci/frontend/index.html, served from an origin of its own,
against a running gateway, and prints what the page saw. Exits 1 if any check failed.

The page holds only a user's JWT (minted here with the test-only key tests/fixtures/
jwt-es256-private.pem, which the gateway verifies through JWT_PUBLIC_KEY_FILE). Chromium is
driven over the DevTools protocol (`websockets`): navigate, then poll the page until its
checks are done (bounded), read #results, and fetch the pre-signed download URL the page got
to check its bytes. Usage (see .ci/frontend.sh):

  drive.py --gateway http://127.0.0.1:PORT --page-port PORT --client ID --other-client ID
           --issuer ISS --audience AUD [--service-token TOKEN --public-listener]
"""
import argparse
import functools
import hashlib
import http.server
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import jwt
from websockets.sync.client import connect

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
KEY = ROOT / "tests/fixtures/jwt-es256-private.pem"
# Bounds on a slow, loaded machine; every wait polls a condition.
START_WITHIN = 120
CHECKS_WITHIN = 300


def mint(args) -> str:
    now = int(time.time())
    claims = {
        "iss": args.issuer,
        "aud": args.audience,
        "sub": "frontend-ci-user",
        "iat": now,
        "exp": now + 600,
        "aa_client_id": args.client,
    }
    return jwt.encode(claims, KEY.read_text(), algorithm="ES256", headers={"typ": "JWT"})


def serve_page(directory: Path, port: int) -> http.server.ThreadingHTTPServer:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *_):
            pass

    handler = functools.partial(Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class Devtools:
    """One page target of Chromium over the DevTools protocol."""

    def __init__(self, ws):
        self.ws = ws
        self.ids = itertools.count(1)
        self.events = []

    def call(self, method: str, params=None, within: float = 60):
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + within
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return result.get("result", {}).get("value")


def start_chromium(profile: Path, log):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        sys.exit("chromium is not installed (.ci/frontend.sh installs Debian's package)")
    proc = subprocess.Popen(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "about:blank",
        ],
        stdout=log,
        stderr=log,
    )
    # Chromium writes the port it picked to DevToolsActivePort in the profile.
    active = profile / "DevToolsActivePort"
    deadline = time.monotonic() + START_WITHIN
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"chromium exited with {proc.returncode} before its DevTools port was up")
        if active.exists() and active.read_text().strip():
            port = int(active.read_text().split()[0])
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30))
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return proc, pages[0]["webSocketDebuggerUrl"]
        time.sleep(0.2)
    proc.kill()
    sys.exit(f"chromium's DevTools port was not up within {START_WITHIN} s")


def run_page(page: Devtools, page_origin: str, log_path: Path):
    """Loads the page, waits (bounded) for its checks; (results, download check, preflights)."""
    page.call("Network.enable")
    page.call("Page.enable")
    page.call("Page.navigate", {"url": f"{page_origin}/index.html"})
    results_json = None
    deadline = time.monotonic() + CHECKS_WITHIN
    while time.monotonic() < deadline:
        results_json = page.evaluate(
            "(() => { const r = document.getElementById('results');"
            " return r && r.dataset.done === '1' ? r.textContent : null; })()"
        )
        if results_json:
            break
        time.sleep(0.25)
    if not results_json:
        print(f"the page's checks did not finish within {CHECKS_WITHIN} s")
        print(log_path.read_text(errors="replace")[-4000:])
        return None, None, 0
    download = page.evaluate("window.downloadCheck")
    preflights = sum(
        1
        for e in page.events
        if e.get("method") == "Network.requestWillBeSent"
        and e["params"]["request"].get("method") == "OPTIONS"
    )
    return json.loads(results_json), download, preflights


def open_url(req):
    """urlopen that hands back error answers (4xx/5xx) instead of raising."""
    try:
        return urllib.request.urlopen(req, timeout=60)
    except urllib.error.HTTPError as e:
        return e


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--gateway", required=True)
    p.add_argument("--page-port", type=int, required=True)
    p.add_argument("--client", required=True)
    p.add_argument("--other-client", required=True)
    p.add_argument("--issuer", required=True)
    p.add_argument("--audience", required=True)
    p.add_argument("--service-token")
    p.add_argument("--public-listener", action="store_true")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="frontend-"))
    site = work / "site"
    site.mkdir()
    for name in ("index.html", "app.js"):
        shutil.copy(HERE / name, site / name)
    config = {
        "gateway": args.gateway,
        "client": args.client,
        "otherClient": args.other_client,
        "userToken": mint(args),
        "serviceToken": args.service_token,
        "publicListener": args.public_listener,
    }
    (site / "config.js").write_text(f"window.FRONTEND_CONFIG = {json.dumps(config)};\n")
    page_origin = f"http://127.0.0.1:{args.page_port}"
    server = serve_page(site, args.page_port)
    log_path = work / "chromium.log"
    proc = None
    try:
        with open(log_path, "wb") as log:
            proc, ws_url = start_chromium(work / "profile", log)
            with connect(ws_url, max_size=None, open_timeout=30) as ws:
                results, download, preflights = run_page(Devtools(ws), page_origin, log_path)
            if results is None:
                return 1
    finally:
        if proc:
            proc.kill()
            proc.wait()
        server.shutdown()

    # The pre-signed URL the page got: it serves the statement's bytes to anyone holding it
    # (checked here, since the bucket is another origin without CORS for the page).
    if download and download.get("url"):
        with open_url(download["url"]) as r:
            body = r.read()
            got = hashlib.sha256(body).hexdigest()
        results.append({
            "name": "download URL: its bytes have the listed SHA-256",
            "ok": got == download["sha256"],
            "saw": f"HTTP {r.status}, {len(body)} bytes, {r.headers.get('Content-Type')}",
        })
    # The preflight the browser sent, as the gateway answers it to the page's origin.
    req = urllib.request.Request(
        f"{args.gateway}/v1/clients/{args.client}/statements",
        method="OPTIONS",
        headers={
            "Origin": page_origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization,range,if-none-match",
        },
    )
    with open_url(req) as r:
        allow_origin = r.headers.get("Access-Control-Allow-Origin")
        results.insert(0, {
            "name": "CORS preflight from the page's origin",
            "ok": r.status == 200 and allow_origin == page_origin,
            "saw": f"HTTP {r.status}, Allow-Origin {allow_origin}, Allow-Headers "
                   f"{r.headers.get('Access-Control-Allow-Headers')}; the browser sent {preflights} preflights",
        })

    print(f"what the page at {page_origin} saw (gateway {args.gateway}):")
    for res in results:
        print(f"  {'ok  ' if res['ok'] else 'FAIL'} {res['name']}: {res['saw']}")
    failed = [r for r in results if not r["ok"]]
    print(f"frontend checks: {len(results) - len(failed)} ok, {len(failed)} failed")
    shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
