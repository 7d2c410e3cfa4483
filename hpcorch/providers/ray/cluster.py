"""Reaching a Ray cluster: address resolution, Ray's token authentication, a head for one sweep.

Ray 2.60 protects the dashboard / Jobs API with a bearer token (RAY_AUTH_MODE
=token). Clients here authenticate exactly as Ray's own SDK does: the token
comes from Ray's loader (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)
and travels in the `Authorization: Bearer` header.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from hpcorch.errors import ProviderUnavailable

#: How to start a Ray that hpcorch can use (shown whenever a cluster cannot be reached).
START_HINT = ("start one with scripts/ray-up.sh (a local head on 127.0.0.1:8265), or "
              "`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ray start --head --node-ip-address 127.0.0.1 "
              "--dashboard-host 127.0.0.1`, or set provider.address=null to start a Ray just "
              "for this sweep")

#: Environment every Ray process hpcorch starts gets: loopback only, no usage reporting.
RAY_LOCAL_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def auth_headers() -> dict[str, str]:
    """`Authorization: Bearer <token>` when Ray has a token for this user, else nothing."""
    from ray._raylet import AuthenticationTokenLoader  # type: ignore[attr-defined]

    loader = AuthenticationTokenLoader.instance()
    if not loader.has_token(ignore_auth_mode=True):
        return {}
    return {"Authorization": "Bearer " + loader.get_raw_token(ignore_auth_mode=True)}


def ensure_token() -> None:
    """Create Ray's token (as `ray get-auth-token --generate` does) when there is none."""
    from ray._private.authentication.authentication_token_setup import generate_and_save_token
    from ray._raylet import AuthenticationTokenLoader  # type: ignore[attr-defined]

    loader = AuthenticationTokenLoader.instance()
    if not loader.has_token(ignore_auth_mode=True):
        generate_and_save_token()
        loader.reset_cache()


def resolve_address(address: str) -> str:
    """The Jobs API URL for `address` (an http URL is used as it is; `auto`, a GCS
    host:port or a ray:// address are looked up in the cluster, as Ray's CLI does)."""
    if address.startswith(("http://", "https://")):
        return address.rstrip("/")
    from ray._private.authentication.authentication_token_setup import (
        maybe_enable_token_auth_if_token_available,
    )
    from ray.dashboard.utils import get_address_for_submission_client

    setup_log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level = setup_log.level
    setup_log.setLevel(logging.ERROR)  # its "token auth is enabled" warning is not news here
    try:
        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
        return str(get_address_for_submission_client(address)).rstrip("/")
    except Exception as exc:  # noqa: BLE001 - any failure here means: no cluster there
        raise ProviderUnavailable(
            f"[ray] cannot find a Ray cluster at address={address!r}: "
            f"{type(exc).__name__}: {_first_line(exc)}; {START_HINT}") from None
    finally:
        setup_log.setLevel(level)


def http_get(url: str, path: str, headers: dict[str, str], timeout: float) -> Any:
    """GET a dashboard endpoint and decode its JSON (ProviderUnavailable when unreachable)."""
    request = urllib.request.Request(url + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) only
            body = response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace").strip()[:200]
        if exc.code in (401, 403):
            raise ProviderUnavailable(
                f"[ray] the Ray dashboard at {url} refused hpcorch's token (HTTP {exc.code}: "
                f"{detail}); give hpcorch the cluster's token as Ray's own clients get it: "
                "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token") from None
        raise ProviderUnavailable(f"[ray] {url}{path} answered HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ProviderUnavailable(
            f"[ray] cannot reach the Ray dashboard / Jobs API at {url} ({reason}); "
            f"{START_HINT}") from None
    try:
        return json.loads(body) if body else None
    except json.JSONDecodeError:
        return body


def node_resources(url: str, headers: dict[str, str], timeout: float) -> list[dict[str, float]]:
    """Total resources of every alive node, from the dashboard's state API (one call)."""
    data = http_get(url, "/api/v0/nodes?limit=10000&detail=true", headers, timeout)
    rows = (((data or {}).get("data") or {}).get("result") or {}).get("result") or []
    return [dict(row.get("resources_total") or {}) for row in rows
            if str(row.get("state", "ALIVE")).upper() == "ALIVE"]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ray_executable() -> list[str]:
    """argv prefix of Ray's CLI belonging to this interpreter."""
    beside = Path(sys.executable).with_name("ray")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("ray")
    if found:
        return [found]
    return [sys.executable, "-m", "ray.scripts.scripts"]


class LocalHead:
    """A Ray head started for one sweep (`provider.address=null`) and stopped afterwards.

    `ray start --head --block` runs as our child in its own session, with every
    port chosen free on 127.0.0.1 (so it never collides with another head, e.g.
    scripts/ray-up.sh's) and its own temp dir. Stopping it SIGTERMs that
    process, which takes all of the head's processes down with it.
    """

    def __init__(self, num_cpus: int | None, timeout: float) -> None:
        self.num_cpus = num_cpus
        self.timeout = timeout
        self.temp_dir = ""
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        """Start the head; returns its Jobs API URL once the dashboard answers."""
        ensure_token()
        # Short path on purpose: Ray's unix sockets live under it (107-byte limit).
        self.temp_dir = tempfile.mkdtemp(prefix="hpcorch-ray-", dir="/tmp")
        ports = {name: _free_port() for name in (
            "port", "dashboard-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
            "metrics-export-port", "runtime-env-agent-port", "ray-client-server-port")}
        argv = [*ray_executable(), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
                "--dashboard-host", "127.0.0.1", "--temp-dir", self.temp_dir,
                "--disable-usage-stats"]
        for name, port in ports.items():
            argv += [f"--{name}", str(port)]
        if self.num_cpus:
            argv += ["--num-cpus", str(self.num_cpus)]
        env = {**os.environ, **RAY_LOCAL_ENV, "RAY_AUTH_MODE": "token"}
        log = open(Path(self.temp_dir) / "hpcorch-ray-start.log", "ab")  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        self.url = f"http://127.0.0.1:{ports['dashboard-port']}"
        deadline = time.monotonic() + self.timeout
        while True:
            if self._proc.poll() is not None:
                tail = self._log_tail()
                self.stop()
                raise ProviderUnavailable(
                    f"[ray] the Ray started for this sweep exited (rc={self._proc.returncode}): "
                    f"{tail}")
            try:
                # Ready = its node has registered (jobs and resource checks need it).
                if node_resources(self.url, auth_headers(), timeout=2.0):
                    return self.url
                raise ProviderUnavailable("no node yet")
            except ProviderUnavailable:
                if time.monotonic() > deadline:
                    tail = self._log_tail()
                    self.stop()
                    raise ProviderUnavailable(
                        f"[ray] the Ray started for this sweep did not answer on {self.url} "
                        f"within {self.timeout:g}s: {tail}") from None
                time.sleep(0.2)

    def _log_tail(self) -> str:
        path = Path(self.temp_dir) / "hpcorch-ray-start.log"
        with contextlib.suppress(OSError):
            return " | ".join(path.read_text(errors="replace").strip().splitlines()[-5:])
        return ""

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the head and every process it started; remove its temp dir. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = ""
