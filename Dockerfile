# One image for every role of sharevol: the controller, the node plugin, and the managed NFS
# server (sharevol starts and supervises NFS-Ganesha itself). Build from the repository root:
#   docker build -t registry.example.com/sharevol:0.1.0 .
# then point the manifests at it (deploy/README.md, "Image").

# ---- build: a venv with sharevol and its wheels, made by the same Python as the runtime ----
FROM debian:bookworm-slim AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# Binary wheels only for the C-extension dependencies: no compiler in this stage.
RUN python3 -m venv /opt/sharevol \
    && /opt/sharevol/bin/pip install --no-cache-dir --disable-pip-version-check \
        --only-binary=grpcio,protobuf,pydantic-core . \
    && /opt/sharevol/bin/sharevol --version

# ---- runtime -----------------------------------------------------------------------------
FROM debian:bookworm-slim
# python3: runs the venv above (same path, same version as the build stage).
# tini: PID 1 that reaps orphans (mount helpers killed on timeout leave children behind).
# util-linux, mount: losetup, blkid, findmnt, mount/umount. nfs-common: the NFS client.
# btrfs-progs, xfsprogs, e2fsprogs: pool and image-volume filesystems.
# nfs-ganesha, nfs-ganesha-vfs, dbus: the managed NFS server role (private dbus-daemon).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 \
        ca-certificates \
        tini \
        util-linux mount \
        nfs-common \
        btrfs-progs xfsprogs e2fsprogs \
        nfs-ganesha nfs-ganesha-vfs dbus \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/sharevol /opt/sharevol
COPY deploy/image/sharevol-pool-mount /usr/local/bin/sharevol-pool-mount
ENV PATH=/opt/sharevol/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    GRPC_ENABLE_FORK_SUPPORT=false
ENTRYPOINT ["/usr/bin/tini", "--", "sharevol"]
CMD ["--help"]
