"""Take one headless-Chromium screenshot of the Ray dashboard's jobs page (or one job's).

    scripts/in-netns.sh .venv/bin/python scripts/ray-dashboard-screenshot.py \
        [--url http://127.0.0.1:8265] [--out ray-dashboard-jobs.png] [--expect TEXT ...]
        [--job SUBMISSION_ID]

The dashboard needs Ray's token (Ray 2.60): it is handed to the browser as the
dashboard's own session cookie through the DevTools protocol, never on a
command line. The page is captured once every --expect text (e.g. a sweep's
submission id) is on it, or after --timeout seconds. Chromium is Debian's
`chromium` package, run headless with a fresh profile and no network features.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                  "--window-size=1600,1000"]


class DevTools:
    """A minimal DevTools-protocol client over one page's websocket."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events in between are skipped)."""
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            msg = json.loads((await self.ws.receive()).data)
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))


async def capture(args: argparse.Namespace, port: int, token: str) -> list[str]:
    """Open the jobs page with the token cookie; return the expected texts that were missing."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.put(f"http://127.0.0.1:{port}/json/new?about:blank") as resp:
            page = await resp.json(content_type=None)
        async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            tools = DevTools(ws)
            await tools.call("Network.enable")
            if token:
                await tools.call("Network.setCookie", name="ray-authentication-token",
                                 value=token, url=args.url + "/")
            await tools.call("Page.enable")
            page_url = args.url + "/#/jobs" + (f"/{args.job}" if args.job else "")
            await tools.call("Page.navigate", url=page_url)
            deadline = time.monotonic() + args.timeout
            missing = list(args.expect)
            while time.monotonic() < deadline:
                result = await tools.call("Runtime.evaluate", returnByValue=True,
                                          expression="document.body ? document.body.innerText : ''")
                text = str(result.get("result", {}).get("value", ""))
                missing = [e for e in args.expect if e not in text]
                if not missing and ("Jobs" in text or "Job" in text):
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(1.0)  # let the table finish painting
            shot = await tools.call("Page.captureScreenshot", format="png")
            Path(args.out).write_bytes(base64.b64decode(shot["data"]))
            return missing


def main() -> int:
    """Start Chromium, take the screenshot, stop Chromium."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8265")
    parser.add_argument("--out", default="ray-dashboard-jobs.png")
    parser.add_argument("--expect", nargs="*", default=[], help="texts the page must show")
    parser.add_argument("--job", default="",
                        help="a submission id: shoot that job's page (its named tasks) instead")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    args.url = args.url.rstrip("/")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium not found: apt-get install -y --no-install-recommends chromium")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from hpcorch.providers.ray.cluster import auth_headers

    token = auth_headers().get("Authorization", "").removeprefix("Bearer ")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    proc = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                             "about:blank"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or proc.poll() is not None:
                sys.exit("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        missing = asyncio.run(capture(args, port, token))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)
    print(f"wrote {args.out}" + (f" (not shown: {missing})" if missing else ""))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
