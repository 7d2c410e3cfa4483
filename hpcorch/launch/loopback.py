"""Keep every listener of a single-host mpirun on loopback (a bind shim for Open MPI 4.1).

Measured with Open MPI 4.1.4 + PMIx 4.2.2 outside a namespace (`ss -ltnp`): a
two-rank run on this machine listens on 127.0.0.1 (PMIx's tool listener) and on
0.0.0.0 and `*` (ORTE's out-of-band channel), whatever the MCA settings say:
`oob_tcp_if_include lo` only chooses the addresses mpirun advertises, and
`oob_tcp_disable_ipv6_family`, `oob_tcp_static_ipv4_ports` and PMIx's
`ptl_base_if_include` change neither socket. The bind address is hard-coded
(INADDR_ANY / in6addr_any in orte/mca/oob/tcp/oob_tcp_listener.c).

So single-host runs start mpirun with a tiny LD_PRELOAD library that turns a
bind to the wildcard address into a bind to loopback (127.0.0.1 / ::1). Its
constructor takes itself out of LD_PRELOAD again, so the ranks (the research
code) and anything they start bind as they asked. It is compiled once with the
system's C compiler into the user's cache (`$XDG_CACHE_HOME/hpcorch`); without
a compiler, hpcorch says once on stderr that mpirun listens on every interface.

Runs on several hosts (provider=mpi with hosts) do not get it: the remote
daemons must reach mpirun's out-of-band port, so it listens on every interface
there (see `hpcorch.launch.wrappers` for what those runs keep).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from hpcorch.runner import CommandRunner, run_command

#: The marker the library looks for in LD_PRELOAD to remove itself (see SOURCE).
NAME = "hpcorch-loopback"

SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

/* Out of LD_PRELOAD again: only the launcher itself binds to loopback, not its ranks. */
__attribute__((constructor)) static void leave_children_alone(void) {
    const char *list = getenv("LD_PRELOAD");
    if (list == NULL) return;
    char *copy = strdup(list), *kept = calloc(strlen(list) + 1, 1), *save = NULL;
    if (copy == NULL || kept == NULL) { free(copy); free(kept); return; }
    for (char *item = strtok_r(copy, ": ", &save); item; item = strtok_r(NULL, ": ", &save)) {
        if (strstr(item, "hpcorch-loopback") != NULL) continue;
        if (*kept) strcat(kept, ":");
        strcat(kept, item);
    }
    if (*kept) setenv("LD_PRELOAD", kept, 1); else unsetenv("LD_PRELOAD");
    free(copy);
    free(kept);
}

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static bind_fn real = NULL;
    if (real == NULL) real = (bind_fn)dlsym(RTLD_NEXT, "bind");
    if (addr != NULL && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in in4 = *(const struct sockaddr_in *)addr;
        if (in4.sin_addr.s_addr == htonl(INADDR_ANY)) {
            in4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return real(fd, (const struct sockaddr *)&in4, sizeof in4);
        }
    } else if (addr != NULL && addr->sa_family == AF_INET6
               && len >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 in6 = *(const struct sockaddr_in6 *)addr;
        if (memcmp(&in6.sin6_addr, &in6addr_any, sizeof in6addr_any) == 0) {
            in6.sin6_addr = in6addr_loopback;
            return real(fd, (const struct sockaddr *)&in6, sizeof in6);
        }
    }
    return real(fd, addr, len);
}
"""


def cache_dir() -> Path:
    """Where the compiled library is kept: `$XDG_CACHE_HOME/hpcorch` (~/.cache/hpcorch)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hpcorch"


def library_path(directory: Path | None = None) -> Path:
    """The library's file, named by its source's hash (a changed source builds anew)."""
    digest = hashlib.sha256(SOURCE.encode()).hexdigest()[:12]
    return (directory or cache_dir()) / f"{NAME}-{digest}.so"


def build(directory: Path | None = None, runner: CommandRunner = run_command,
          compiler: str | None = None) -> Path:
    """The compiled library, built now if missing (atomically: temporary file, rename).

    Raises OSError naming what is missing (no C compiler, compile error)."""
    target = library_path(directory)
    if target.exists():
        return target
    cc = compiler or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise OSError("no C compiler (cc) on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    source = target.with_name(f".{target.stem}.{os.getpid()}.c")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        source.write_text(SOURCE, encoding="utf-8")
        done = runner([cc, "-shared", "-fPIC", "-O2", "-o", str(tmp), str(source), "-ldl"],
                      timeout=120)
        if done.returncode != 0:
            raise OSError(f"{cc} rc={done.returncode}: {done.stderr.strip()[-300:]}")
        os.replace(tmp, target)
    except subprocess.TimeoutExpired as exc:
        raise OSError(f"{cc} took longer than {exc.timeout} s") from exc
    finally:
        for leftover in (source, tmp):
            leftover.unlink(missing_ok=True)
    return target


@functools.cache  # one build (or one notice) per process and directory
def shim(directory: Path | None = None) -> str | None:
    """The library's path for LD_PRELOAD, or None (after one stderr line) when it cannot
    be built; the run then goes ahead with mpirun listening on every interface."""
    try:
        return str(build(directory))
    except OSError as exc:
        print(f"hpcorch: cannot build the loopback bind shim ({exc}): mpirun's out-of-band "
              "port of single-host MPI runs listens on every interface (Open MPI 4.1 binds "
              "it to the wildcard address); install a C compiler (apt-get install gcc) to "
              "keep it on loopback", file=sys.stderr, flush=True)
        return None


def preload_value(library: str, existing: str | None = None) -> str:
    """LD_PRELOAD with the library first, keeping what the user preloads."""
    existing = os.environ.get("LD_PRELOAD", "") if existing is None else existing
    return ":".join([library, *(p for p in existing.split(":") if p and NAME not in p)])
