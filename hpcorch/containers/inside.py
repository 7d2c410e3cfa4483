"""What a process can tell about the image it runs in. Standard library only: it runs in
every job (the run record's `container` section) and inside `hpcorch container check`."""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
import traceback
from typing import Any

from hpcorch.jobenv import IMAGE_DIGEST_ENV, IMAGE_ENV, RUNTIME_ENV

#: Set by the container wrapper (hpcorch.containers.base); absent outside a container.


def os_release(path: str = "/etc/os-release") -> dict[str, str]:
    """The operating system's release fields (PRETTY_NAME, ID, VERSION_ID, ...)."""
    fields: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                key, sep, value = line.strip().partition("=")
                if sep and key and not key.startswith("#"):
                    fields[key] = value.strip().strip('"').strip("'")
    except OSError:
        pass
    return fields


def container_fingerprint() -> dict[str, str]:
    """The run record's proof of where the code ran: OS release, interpreter, image."""
    release = os_release()
    return {
        "os_release": release.get("PRETTY_NAME", ""),
        "executable": sys.executable,
        "image": os.environ.get(IMAGE_ENV, ""),
        "digest": os.environ.get(IMAGE_DIGEST_ENV, ""),
        "runtime": os.environ.get(RUNTIME_ENV, ""),
    }


def import_app(path: str) -> tuple[bool, str]:
    """Import the research code's script as a module (its `__main__` block does not run)."""
    directory = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, directory)
    try:
        spec = importlib.util.spec_from_file_location("_hpcorch_checked_app", path)
        if spec is None or spec.loader is None:
            return False, f"cannot load {path}"
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: BLE001 - SystemExit from a missing import counts too
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return False, last
    finally:
        sys.path.remove(directory)
    return True, ""


def inside_report(app: str | None = None) -> dict[str, Any]:
    """Everything `hpcorch container check` wants to know about this environment."""
    try:
        import hpcorch

        version = hpcorch.__version__
    except ImportError:  # pragma: no cover - the check runs through hpcorch itself
        version = ""
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "hpcorch": version,
        "os_release": os_release().get("PRETTY_NAME", ""),
        "app": app or "",
        "app_ok": None,
        "app_error": "",
    }
    if app:
        report["app_ok"], report["app_error"] = import_app(app)
    return report
