"""Child process of tests.support.nfs.write_from: write one file over NFS, print the outcome.

Run as `python -m tests.support.nfs_probe URL NAME` (with the source-address shim preloaded);
prints one JSON line, so the parent can tell "refused" from "written".
"""

from __future__ import annotations

import json
import sys

import nfs_rs


def main(url: str, name: str) -> dict[str, object]:
    try:
        with nfs_rs.Client.connect(
            url, uid=0, gid=0, noresvport=True, connect_timeout=20, operation_timeout=20
        ) as client:
            with client.open(name, "wb") as handle:
                handle.write(b"from the probe\n")
            with client.open(name, "rb") as handle:
                data = handle.read()
    except nfs_rs.NfsError as exc:
        return {"result": "error", "error": type(exc).__name__, "errno": exc.errno}
    return {"result": "ok", "read": data.decode()}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
