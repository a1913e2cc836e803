"""NFS test helpers: a free loopback port, nfs-rs (a user-space NFSv4.1 client, since this
machine's kernel has no NFS client) and a client process whose source address is 127.0.0.2.

nfs-rs cannot choose its source address, and a connection to any 127.x address leaves from
127.0.0.1 (the loopback route's `src`). So the client that must come from 127.0.0.2 runs in a
child process with an LD_PRELOAD shim, compiled here with gcc, that binds each IPv4 socket to
SHAREVOL_SRCADDR before connect() (and rewrites a bind() to INADDR_ANY). A network namespace
would also do, but Ganesha then needs a veth pair into it; the shim needs nothing but gcc.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nfs_rs

from sharevol.sys.runner import SubprocessRunner

NFS_TIMEOUT = 20
_SHIM_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);
typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);

static int source(struct in_addr *out) {
    const char *value = getenv("SHAREVOL_SRCADDR");
    return value != NULL && inet_pton(AF_INET, value, out) == 1;
}

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    bind_fn real = (bind_fn)dlsym(RTLD_NEXT, "bind");
    struct in_addr src;
    if (addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in) && source(&src)) {
        struct sockaddr_in copy;
        memcpy(&copy, addr, sizeof copy);
        if (copy.sin_addr.s_addr == htonl(INADDR_ANY)) copy.sin_addr = src;
        return real(fd, (const struct sockaddr *)&copy, sizeof copy);
    }
    return real(fd, addr, len);
}

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    connect_fn real = (connect_fn)dlsym(RTLD_NEXT, "connect");
    bind_fn real_bind = (bind_fn)dlsym(RTLD_NEXT, "bind");
    struct in_addr src;
    if (addr->sa_family == AF_INET && source(&src)) {
        struct sockaddr_in mine;
        socklen_t mine_len = sizeof mine;
        if (getsockname(fd, (struct sockaddr *)&mine, &mine_len) == 0
            && mine.sin_family == AF_INET && mine.sin_port == 0) {
            memset(&mine, 0, sizeof mine);
            mine.sin_family = AF_INET;
            mine.sin_addr = src;
            real_bind(fd, (const struct sockaddr *)&mine, sizeof mine);
        }
    }
    return real(fd, addr, len);
}
"""


def free_port() -> int:
    """A TCP port nothing listens on now, on 127.0.0.1 (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def export_url(port: int, pseudo: str, host: str = "127.0.0.1") -> str:
    return f"nfs://{host}:{port}{pseudo}?version=4.1&nfsport={port}"


@contextmanager
def nfs_client(port: int, pseudo: str, *, uid: int = 0, gid: int = 0) -> Iterator[nfs_rs.Client]:
    """An NFSv4.1 session on one export, from 127.0.0.1, as uid/gid (AUTH_SYS)."""
    client = nfs_rs.Client.connect(
        export_url(port, pseudo),
        uid=uid,
        gid=gid,
        noresvport=True,
        connect_timeout=NFS_TIMEOUT,
        operation_timeout=NFS_TIMEOUT,
    )
    try:
        yield client
    finally:
        client.close()


def write_file(client: nfs_rs.Client, name: str, data: bytes) -> None:
    with client.open(name, "wb") as handle:
        handle.write(data)


def read_file(client: nfs_rs.Client, name: str) -> bytes:
    with client.open(name, "rb") as handle:
        return handle.read()


def build_shim(workdir: Path) -> Path:
    """Compile the source-address shim (gcc, at test time) and return the .so path."""
    source = workdir / "srcaddr.c"
    library = workdir / "srcaddr.so"
    source.write_text(_SHIM_SOURCE)
    SubprocessRunner().run(
        ["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-o", str(library), str(source), "-ldl"],
        timeout=120,
    )
    return library


def write_from(
    shim: Path, source_address: str, port: int, pseudo: str, name: str
) -> dict[str, object]:
    """Write `name` into the export from a client process bound to `source_address`; returns
    {"result": "ok"} or {"result": "error", "error": <exception class>, "errno": ...}."""
    env_argv = [
        "env",
        f"LD_PRELOAD={shim}",
        f"SHAREVOL_SRCADDR={source_address}",
        f"PYTHONPATH={os.pathsep.join(sys.path)}",
        sys.executable,
        "-m",
        "tests.support.nfs_probe",
        export_url(port, pseudo),
        name,
    ]
    result = SubprocessRunner().run(env_argv, timeout=NFS_TIMEOUT * 3)
    answer: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer
