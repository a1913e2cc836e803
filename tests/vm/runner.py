"""Boot one throw-away qemu (TCG) VM that runs `pytest -m vm` on the project, chrooted in the host's
own tree, and bring back its exit code and junit.xml.

The host's / is served read-only by virtiofsd from a private mount namespace (nothing is ever
mounted on the host); the guest puts a tmpfs overlay on it, so it can write anywhere and the
writes vanish at power-off. Only the job dir is shared read-write. docs/vm-tier.md has the
details and the costs. By hand: `.venv/bin/python -m tests.vm` (tests/vm/__main__.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from sharevol.sys.runner import SubprocessRunner
from tests.vm.guest import CMDLINE_MARKER, DISK_SERIALS
from tests.vm.junit import failed_tests
from tests.vm.kernel import GuestKernel, KernelUnavailable, guest_kernel

PROJECT = Path(__file__).resolve().parents[2]
VENV_PYTHON = PROJECT / ".venv" / "bin" / "python"
DEFAULT_TIMEOUT = 600.0
NFS_PORT = 20490
"""Host port that guest connections to 10.0.2.100:2049 reach (a ganesha for the NFS tests)."""
VIRTIOFSD_C = Path("/usr/lib/qemu/virtiofsd")  # Debian 12: qemu-system-common 7.2
VIRTIOFSD_RUST = Path("/usr/libexec/virtiofsd")  # Debian 13+: package virtiofsd
TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86", "busybox": "busybox-static", "cpio": "cpio",
    "depmod": "kmod", "modprobe": "kmod", "unshare": "util-linux", "timeout": "coreutils",
    "apt-get": "apt", "dpkg-deb": "dpkg",
}  # fmt: skip
"""Host tools of the tier, with the Debian package of each (scripts/bootstrap installs them)."""

# Runs in the private mount namespace: bind / read-only at $1, then each "ro:PATH"/"rw:PATH"
# at the same path below it, then exec the daemon given after "--". Arguments stay positional,
# so no path is ever parsed by a shell.
_SERVE_ROOT = """set -e
root=$1; shift
mount --bind -o ro / "$root"
while [ "$1" != -- ]; do
  case $1 in
    ro:*) mount --bind -o ro "${1#ro:}" "$root${1#ro:}" ;;
    rw:*) mount --bind "${1#rw:}" "$root${1#rw:}" ;;
  esac
  shift
done
shift
exec "$@"
"""


@dataclass(frozen=True)
class VmJob:
    """What one VM run does: pytest arguments (paths, -k ...) and the machine around it."""

    pytest_args: tuple[str, ...] = ("tests/vm",)
    timeout: float = DEFAULT_TIMEOUT
    disks: tuple[str, ...] = DISK_SERIALS
    disk_bytes: int = 1024**3
    nfs_port: int = NFS_PORT
    memory: str = "2G"
    cpus: int = 2
    env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment for the guest pytest (e.g. where the host's NFS server exports)."""
    console: TextIO | None = None
    """Where to echo the guest console live (the CLI passes stdout); it is always saved too."""


@dataclass
class VmResult:
    """How the run ended. rc is the guest pytest's exit code; None when the guest never wrote
    one (crash, failed boot), 124 when the host timeout killed the VM."""

    rc: int | None
    seconds: float
    job_dir: Path
    console_log: Path
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def report(self, console: bool = True) -> str:
        """A message that names what failed, for an assertion (with the console's last lines)
        or the CLI (which showed the console live)."""
        if self.rc == 0:
            return f"VM tier passed in {self.seconds:.1f} s"
        if self.rc is None:
            what = "the guest crashed or never ran the job (no rc file)"
        elif self.rc == 124:
            what = "the VM ran past its timeout and was killed (rc 124)"
        else:
            what = f"guest pytest exited {self.rc}"
        lines = [f"VM tier failed after {self.seconds:.1f} s: {what}"]
        if self.failures:
            lines += ["failing guest tests:", *(f"  {name}" for name in self.failures)]
        if console:
            tail = console_tail(self.console_log, 40 if self.failures else 80)
            lines += [f"console ({self.console_log}), last lines:", tail]
        return "\n".join(lines)


def unavailable() -> str | None:
    """Why the VM tier cannot run on this host (the exact skip reason), or None."""
    if os.geteuid() != 0:
        return f"the VM tier needs root (virtiofsd, mount namespaces), not uid {os.geteuid()}"
    missing = [f"{tool} (package {pkg})" for tool, pkg in TOOLS.items() if not shutil.which(tool)]
    if virtiofsd() is None:
        missing.append(f"{VIRTIOFSD_C} (package qemu-system-common) or {VIRTIOFSD_RUST}")
    if missing:
        return "the VM tier needs " + ", ".join(missing)
    if not VENV_PYTHON.exists():
        return f"the VM tier runs the project venv: {VENV_PYTHON} is missing (scripts/bootstrap)"
    return None


def virtiofsd() -> Path | None:
    """The virtiofs daemon: the C one of qemu <= 7.2, else the Rust one."""
    for path in (VIRTIOFSD_C, VIRTIOFSD_RUST):
        if os.access(path, os.X_OK):
            return path
    return None


def run_vm(job: VmJob, workdir: Path, kernel: GuestKernel | None = None) -> VmResult:
    """Boot one VM in `workdir` (an empty dir of the caller's) and run the job's pytest in it.

    Leaves workdir/job (run.sh, rc, junit.xml), workdir/console.log and virtiofsd.log; removes
    the disks and the socket; leaves no process or mount behind, also on timeout or crash."""
    reason = unavailable()
    if reason:
        raise KernelUnavailable(reason)
    bad = [serial for serial in job.disks if not re.fullmatch(r"[A-Za-z0-9_-]{1,20}", serial)]
    if bad:
        raise ValueError(f"disk serials must be 1-20 of [A-Za-z0-9_-]: {bad}")
    kernel = kernel or guest_kernel()
    # The host sets PYTHONDONTWRITEBYTECODE; without .pyc the guest Python starts ~3x slower.
    compile_argv = [str(VENV_PYTHON), "-m", "compileall", "-q", str(PROJECT / "src"),
                    str(PROJECT / "tests")]  # fmt: skip
    SubprocessRunner().run(compile_argv, timeout=120)
    job_dir, served = workdir / "job", workdir / "root"
    job_dir.mkdir()
    served.mkdir()
    (job_dir / "run.sh").write_text(_job_script(job, job_dir))
    disks = [workdir / f"{serial}.img" for serial in job.disks]
    for image in disks:
        with image.open("wb") as handle:
            handle.truncate(job.disk_bytes)
    socket = workdir / "vfs.sock"
    console_log = workdir / "console.log"
    started = time.monotonic()
    try:
        with _sigterm_unwinds(), _virtiofsd(served, job_dir, socket), console_log.open("w") as log:
            argv = _qemu_argv(job, kernel, job_dir, socket, disks)
            rc = _run_qemu(argv, job.timeout, log, job.console)
    finally:
        for image in disks:
            image.unlink(missing_ok=True)
        socket.unlink(missing_ok=True)
        if os.path.ismount(served):  # never delete through a leaked bind of /
            raise RuntimeError(f"{served} is still mounted on the host; not removing it")
        served.rmdir()
    seconds = time.monotonic() - started
    rc_guest = 124 if rc == 124 else _read_rc(job_dir / "rc")
    junit = job_dir / "junit.xml"
    failures = failed_tests(junit) if junit.exists() else []
    return VmResult(rc_guest, seconds, job_dir, console_log, failures)


def _job_script(job: VmJob, job_dir: Path) -> str:
    """run.sh, run chrooted in the guest: the environment is empty there, so set it all."""
    q = shlex.quote
    path = f"{VENV_PYTHON.parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    env = {
        "PATH": path,
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "CI": os.environ.get("CI", ""),
        "TMPDIR": "/tmp",
        **job.env,
    }
    bad = [key for key in env if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key)]
    if bad:
        raise ValueError(f"not environment variable names: {bad}")
    pytest = [str(VENV_PYTHON), "-m", "pytest", "-m", "vm", "-p", "no:cacheprovider", "-v",
              "--color=no", "--basetemp=/tmp/vm-pytest", f"--junitxml={job_dir / 'junit.xml'}",
              *job.pytest_args]  # fmt: skip
    return "\n".join(
        [
            "#!/bin/sh",
            "# Written by tests/vm/runner.py; runs chrooted in the guest.",
            *(f"export {key}={q(value)}" for key, value in env.items()),
            f"cd {q(str(PROJECT))} || exit 99",
            "rc=0",
            " ".join(q(word) for word in pytest) + " || rc=$?",
            f"echo $rc > {q(str(job_dir / 'rc.new'))}",
            f"mv {q(str(job_dir / 'rc.new'))} {q(str(job_dir / 'rc'))}",
            "",
        ]
    )


@contextlib.contextmanager
def _virtiofsd(served: Path, job_dir: Path, socket: Path) -> Iterator[None]:
    """Serve / read-only (+ the mounts the run needs, + job_dir read-write) on `socket`."""
    daemon = virtiofsd()
    assert daemon is not None
    binds = [
        f"ro:{mount}"
        for mount in _extra_mounts([PROJECT, VENV_PYTHON.parent, Path(sys.base_prefix), job_dir])
    ]
    binds.append(f"rw:{job_dir}")
    if daemon == VIRTIOFSD_C:
        serve = [str(daemon), f"--socket-path={socket}", "-o", f"source={served}",
                 "-o", "cache=always", "-o", "sandbox=namespace", "--rlimit-nofile=0",
                 "--thread-pool-size=4", "-o", "log_level=err"]  # fmt: skip
    else:  # the Rust virtiofsd of Debian 13+ (untested here)
        serve = [str(daemon), f"--socket-path={socket}", f"--shared-dir={served}",
                 "--cache=always", "--sandbox=namespace", "--rlimit-nofile=0",
                 "--thread-pool-size=4", "--log-level=error"]  # fmt: skip
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", _SERVE_ROOT, "serve-root",
            str(served), *binds, "--", *serve]  # fmt: skip
    log = socket.with_name("virtiofsd.log")
    with log.open("w") as errors:  # a file, not a pipe: a full pipe would stall the daemon
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=errors, stderr=errors,
                                start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not socket.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(proc, 1)
                detail = log.read_text(errors="replace").strip()
                raise RuntimeError(f"virtiofsd did not start (rc {proc.returncode}): {detail}")
            time.sleep(0.02)  # no event to wait on for a socket file
        yield
    finally:
        _stop(proc, 5)


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM (a CI cancel, `kill`) into SystemExit while the VM runs, so the cleanup
    below still stops qemu and virtiofsd; only the main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _extra_mounts(paths: Sequence[Path]) -> list[Path]:
    """Mount points other than / that hold `paths`: the non-recursive bind of / hides them."""
    found: set[Path] = set()
    for path in paths:
        current = path.resolve()
        while current != current.parent and not os.path.ismount(current):
            current = current.parent
        if current != current.parent:
            found.add(current)
    return sorted(found, key=lambda p: len(p.parts))


def _qemu_argv(
    job: VmJob, kernel: GuestKernel, job_dir: Path, socket: Path, disks: list[Path]
) -> list[str]:
    """qemu, TCG, shared memfd RAM (vhost-user needs it), virtiofs root, disks by serial."""
    name = f"vmt-{os.getpid()}-{secrets.token_hex(3)}"
    append = (
        f"console=ttyS0 quiet panic=-1 {CMDLINE_MARKER} sharevol_name={name} "
        f"sharevol_job={job_dir / 'run.sh'}"
    )
    busybox = shutil.which("busybox") or "busybox"
    netdev = (
        f"user,id=n0,restrict=on,"
        f"guestfwd=tcp:10.0.2.100:2049-cmd:{busybox} nc 127.0.0.1 {job.nfs_port}"
    )
    argv = [
        "timeout", "-k", "5", str(int(job.timeout)),
        "qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max",
        "-smp", str(job.cpus), "-m", job.memory,
        "-nographic", "-no-reboot", "-serial", "stdio", "-monitor", "none", "-nodefaults",
        "-vga", "none",
        "-object", f"memory-backend-memfd,id=mem,size={job.memory},share=on",
        "-machine", "q35,memory-backend=mem",
        "-kernel", str(kernel.vmlinuz), "-initrd", str(kernel.initrd), "-append", append,
        "-chardev", f"socket,id=vfs0,path={socket}",
        "-device", "vhost-user-fs-pci,chardev=vfs0,tag=hostroot",
        "-netdev", netdev, "-device", "virtio-net-pci,netdev=n0,romfile=",
    ]  # fmt: skip
    for index, (serial, image) in enumerate(zip(job.disks, disks, strict=True)):
        argv += [
            "-drive",
            f"file={image},if=none,id=d{index},format=raw,cache=unsafe",
            "-device",
            f"virtio-blk-pci,drive=d{index},serial={serial}",
        ]
    return argv


def _run_qemu(argv: list[str], timeout: float, log: TextIO, echo: TextIO | None) -> int:
    """Run qemu to its end, copying the console to `log` (and `echo`); returns its exit code."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def pump() -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode(errors="replace")
            log.write(line)
            if echo is not None:
                echo.write(line)
                echo.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=timeout + 15)  # `timeout` itself kills qemu first
    except subprocess.TimeoutExpired:
        rc = 124
    finally:
        _stop(proc, 0)
        reader.join(timeout=5)
        if proc.stdout:
            proc.stdout.close()
    return rc


def _stop(proc: subprocess.Popen[str] | subprocess.Popen[bytes], grace: float) -> None:
    """Wait `grace` seconds for proc, then kill its whole session; always reaps it."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _read_rc(path: Path) -> int | None:
    """The guest's exit code, or None when it never wrote one."""
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def console_tail(path: Path, lines: int) -> str:
    """The last lines of the console, without the firmware's terminal escape codes."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no console output)"
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1bc|\r", "", text)
    return "\n".join(text.splitlines()[-lines:])
