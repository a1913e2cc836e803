"""The VM tier's guest kernel and initramfs: the Debian cloud kernel from apt, never installed.

The package is fetched with `apt-get download`, its files taken with `dpkg-deb -x`, and an
initramfs of static busybox + the modules the tests need (with their dependencies, resolved by
the host's kmod against the unpacked tree) is built around tests/vm/init.sh. Both are cached
per kernel version (the initramfs also per hash of its inputs), so a warm run costs one
`apt-cache depends` call.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import lzma
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sharevol.sys.runner import CommandResult, SubprocessRunner

META_PACKAGE = "linux-image-cloud-amd64"
"""Debian's metapackage that always depends on the current cloud kernel of the release."""
KERNEL_ENV = "SHAREVOL_VM_KERNEL"
"""Set to a kernel release (e.g. 6.1.0-56-cloud-amd64) to pin it instead of asking apt."""
CACHE_ENV = "SHAREVOL_VM_CACHE"

MODULES = (
    "virtio_pci", "virtio_net", "virtio_blk", "virtiofs", "overlay", "loop",
    "xfs", "ext4", "quota_v2", "nfsv4",
)  # fmt: skip
"""Module roots of the initramfs; their dependencies are added. Built-in ones are skipped."""
INIT_SCRIPT = Path(__file__).with_name("init.sh")
INITRD_FORMAT = "2"
"""Bump when this module changes how the initramfs is laid out, to invalidate caches."""
BUSYBOX = "/bin/busybox"
TIMEOUT = 300.0

_DEPENDS = re.compile(r"Depends:\s*linux-image-(\S+-cloud-amd64)\s*$", re.MULTILINE)
_RELEASE = re.compile(r"^[0-9][0-9A-Za-z.+~-]*$")


class KernelUnavailable(RuntimeError):
    """The guest kernel cannot be had (apt does not know or cannot fetch it); says why."""


@dataclass(frozen=True)
class GuestKernel:
    """A bootable pair from the cache."""

    release: str
    vmlinuz: Path
    initrd: Path
    built: bool
    """True when this call downloaded or built something (a cold cache)."""


def cache_dir() -> Path:
    """$SHAREVOL_VM_CACHE, else /var/cache/sharevol-vm for root, else the XDG cache dir."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    if os.geteuid() == 0:
        return Path("/var/cache/sharevol-vm")
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "sharevol-vm"


def guest_kernel(cache: Path | None = None, modules: tuple[str, ...] = MODULES) -> GuestKernel:
    """The cached kernel + initramfs for the release apt offers now, built when missing."""
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / ".lock"):
        release = _pick_release(cache)
        kdir = cache / release
        kdir.mkdir(exist_ok=True)
        deb, vmlinuz = kdir / "linux-image.deb", kdir / "vmlinuz"
        initrd = kdir / f"initrd-{_initrd_key(release, modules)}.cpio.gz"
        if vmlinuz.exists() and initrd.exists():
            return GuestKernel(release, vmlinuz, initrd, built=False)
        if not deb.exists():
            try:
                _download(release, kdir)
            except KernelUnavailable:
                with contextlib.suppress(OSError):
                    kdir.rmdir()  # only when empty: never leave a half-made entry
                raise
        with tempfile.TemporaryDirectory(dir=cache, prefix=".build-") as scratch:
            tree = Path(scratch) / "pkg"
            _run(["dpkg-deb", "-x", str(deb), str(tree)])
            if not vmlinuz.exists():
                shutil.copyfile(tree / "boot" / f"vmlinuz-{release}", kdir / ".vmlinuz.new")
                (kdir / ".vmlinuz.new").rename(vmlinuz)
            _build_initrd(tree, release, modules, Path(scratch) / "initramfs", initrd)
        _prune(cache, keep=initrd)
        return GuestKernel(release, vmlinuz, initrd, built=True)


def _prune(cache: Path, keep: Path) -> None:
    """Drop the files of older kernels and initramfs builds (by their known names only)."""
    for kdir in cache.glob("*-cloud-amd64"):
        stale = [*kdir.glob("initrd-*.cpio.gz")]
        if kdir != keep.parent:
            stale += [kdir / "vmlinuz", kdir / "linux-image.deb"]
        for path in stale:
            if path != keep:
                path.unlink(missing_ok=True)
        if kdir != keep.parent:
            with contextlib.suppress(OSError):
                kdir.rmdir()


def _pick_release(cache: Path) -> str:
    """The kernel release to boot: pinned by env, else what apt's metapackage depends on now,
    else (apt knows nothing) the newest one already cached."""
    pinned = os.environ.get(KERNEL_ENV, "").strip()
    if pinned:
        if not _RELEASE.match(pinned) or not pinned.endswith("-cloud-amd64"):
            raise KernelUnavailable(f"{KERNEL_ENV}={pinned!r}: want e.g. 6.1.0-56-cloud-amd64")
        return pinned
    if shutil.which("apt-cache") is None:
        raise KernelUnavailable("needs apt-cache (a Debian host) to find the cloud kernel")
    result = _run(["apt-cache", "depends", "--important", META_PACKAGE], check=False)
    found: list[str] = _DEPENDS.findall(result.stdout)
    if found:
        return max(found, key=_release_key)
    cached = [p.parent.name for p in cache.glob("*-cloud-amd64/vmlinuz")]
    if cached:
        return max(cached, key=_release_key)
    detail = (result.stderr or result.stdout).strip() or "no Depends line"
    raise KernelUnavailable(
        f"apt does not know {META_PACKAGE} ({detail}); the VM tier boots the Debian cloud "
        "kernel: run `apt-get update` on a Debian 12 host with bookworm main enabled"
    )


def _release_key(release: str) -> tuple[int, ...]:
    """6.1.0-56 sorts after 6.1.0-9."""
    return tuple(int(number) for number in re.findall(r"\d+", release))


def _download(release: str, kdir: Path) -> None:
    """`apt-get download` the kernel package into kdir; as root, retry once after an
    `apt-get update` (a fresh machine's lists may predate the current kernel)."""
    package = f"linux-image-{release}"
    with tempfile.TemporaryDirectory(dir=kdir, prefix=".download-") as scratch:
        argv = ["env", f"--chdir={scratch}", "apt-get", "download", "-q",
                "-o", "APT::Sandbox::User=root", package]  # fmt: skip
        result = _run(argv, check=False)
        if result.returncode != 0 and os.geteuid() == 0:
            _run(["apt-get", "update", "-qq"], check=False)
            result = _run(argv, check=False)
        debs = sorted(Path(scratch).glob(f"{package}_*.deb"))
        if result.returncode != 0 or not debs:
            detail = (result.stderr or result.stdout).strip()[-500:] or "no .deb written"
            raise KernelUnavailable(
                f"apt cannot provide {package}, the VM tier's guest kernel ({detail}); it needs "
                f"a Debian 12 host with bookworm (and bookworm-security) in its apt sources, or "
                f"{KERNEL_ENV}=<release> naming a cloud kernel apt has"
            )
        debs[-1].rename(kdir / "linux-image.deb")


def _initrd_key(release: str, modules: tuple[str, ...]) -> str:
    """Hash of everything that goes into the initramfs, so an edit rebuilds it."""
    digest = hashlib.sha256()
    for part in (INITRD_FORMAT, release, " ".join(modules)):
        digest.update(part.encode() + b"\0")
    digest.update(INIT_SCRIPT.read_bytes())
    digest.update(Path(BUSYBOX).read_bytes())
    return digest.hexdigest()[:16]


def _build_initrd(
    tree: Path, release: str, modules: tuple[str, ...], root: Path, target: Path
) -> None:
    """Write a gzip'ed newc cpio of busybox, init.sh and the modules' closure to `target`."""
    if not is_static_elf(Path(BUSYBOX)):
        raise KernelUnavailable(f"{BUSYBOX} is not static: install busybox-static")
    _run(["depmod", "-b", str(tree), release])
    moddir = Path("lib/modules") / release
    for sub in ("bin", "sbin", "dev", "proc", "sys", "run", "tmp", moddir):
        (root / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    (root / "sbin" / "modprobe").symlink_to("../bin/busybox")
    shutil.copy2(INIT_SCRIPT, root / "init")
    (root / "init").chmod(0o755)
    for name in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        if (tree / moddir / name).exists():
            shutil.copy2(tree / moddir / name, root / moddir / name)
    for module in _closure(tree, release, modules):
        relative = module.relative_to(tree)
        dest = root / relative.with_suffix("") if module.suffix == ".xz" else root / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        if module.suffix == ".xz":  # busybox modprobe cannot read compressed modules
            dest.write_bytes(lzma.decompress(module.read_bytes()))
        elif module.suffix == ".ko":
            shutil.copy2(module, dest)
        else:
            raise KernelUnavailable(f"{module.name}: compressed as {module.suffix}, unsupported")
    _run(["depmod", "-b", str(root), release])
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    archive = target.with_name(f".{target.name}.cpio")
    _run(
        ["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0", "-D", str(root), "-F", str(archive)],
        stdin="\n".join(files) + "\n",
    )
    partial = target.with_name(f".{target.name}.new")
    with archive.open("rb") as source, gzip.open(partial, "wb", compresslevel=6) as sink:
        shutil.copyfileobj(source, sink)
    archive.unlink()
    partial.rename(target)


def _closure(tree: Path, release: str, modules: tuple[str, ...]) -> list[Path]:
    """The .ko files the module roots need, dependencies first, without duplicates."""
    found: list[Path] = []
    for name in modules:
        argv = ["modprobe", "-d", str(tree), "-S", release, "--show-depends", name]
        for line in _run(argv).stdout.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "insmod":
                path = Path(words[1])
                if path not in found:
                    found.append(path)
            elif not (len(words) >= 2 and words[0] == "builtin"):
                raise KernelUnavailable(f"modprobe --show-depends {name}: unexpected {line!r}")
    return found


def is_static_elf(path: Path) -> bool:
    """Whether `path` is an ELF64 executable without a program interpreter (PT_INTERP)."""
    with path.open("rb") as handle:
        header = handle.read(64)
        if len(header) < 64 or header[:5] != b"\x7fELF\x02":
            return False
        (phoff,) = struct.unpack_from("<Q", header, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        handle.seek(phoff)
        table = handle.read(phentsize * phnum)
    kinds = (struct.unpack_from("<I", table, i * phentsize)[0] for i in range(phnum))
    return 3 not in kinds  # PT_INTERP


def _run(argv: list[str], *, check: bool = True, stdin: str | None = None) -> CommandResult:
    """Every command of the build goes through the project's runner, with a timeout."""
    return SubprocessRunner().run(argv, timeout=TIMEOUT, check=check, stdin=stdin)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock so that two runs never build the same cache entry at once."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
