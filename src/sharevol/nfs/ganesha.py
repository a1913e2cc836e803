"""NFS-Ganesha supervised with a private dbus-daemon: started, watched, restarted, stopped.

Ganesha is the NFS server (DESIGN.md: never a home-made one). It runs in the foreground (-F) as
a child in its own session, with its DBus control on a private bus whose socket sits in a 0700
directory. A supervisor thread waits on both processes' pidfds; when either dies it restarts the
pair (with a back-off when they keep dying) and calls `on_restart`, which re-adds every export.
Debian starts nothing by itself here (policy-rc.d), and no rpcbind is needed: NFSv4 only.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import select
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sharevol.errors import CommandFailed, FailedPrecondition, Internal
from sharevol.nfs.bus import GaneshaBus, GaneshaBusError
from sharevol.nfs.conf import ServerSettings, dbus_conf, ganesha_conf
from sharevol.sys.daemon import Daemon, kill_stale

log = logging.getLogger(__name__)

GANESHA = "ganesha.nfsd"
DBUS_DAEMON = "dbus-daemon"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
"""Ganesha takes ~1.5 s to shut down cleanly on SIGTERM (measured); then it is killed."""
BACKOFF = (0.0, 1.0, 2.0, 5.0, 10.0, 30.0)
"""Delays before restarting a pair that keeps dying; reset once it ran for STABLE seconds."""
STABLE = 60.0
_MAX_SOCKET_PATH = 100
_POLL_INTERVAL = 0.02

RestartHook = Callable[[], object]


class GaneshaServer:
    """One supervised Ganesha; start() blocks until it serves, stop() until it is gone."""

    def __init__(
        self,
        settings: ServerSettings,
        *,
        on_restart: RestartHook | None = None,
        start_timeout: float = START_TIMEOUT,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self.settings = settings
        self.runtime_dir = settings.runtime_dir
        self.on_restart = on_restart
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.restarts = 0
        self._ganesha: Daemon | None = None
        self._dbus: Daemon | None = None
        self._stopping = threading.Event()
        self._wake_read, self._wake_write = -1, -1
        self._supervisor: threading.Thread | None = None
        self._socket_dir = self._choose_socket_dir()
        self.bus = GaneshaBus(self._socket_dir / "dbus.sock")
        self._restarted = threading.Condition()
        self._processes = threading.Lock()
        """Held while the pair is stopped or started, so stop() never races a restart."""

    @property
    def conf_path(self) -> Path:
        return self.runtime_dir / "ganesha.conf"

    @property
    def log_path(self) -> Path:
        return self.runtime_dir / "ganesha.log"

    @property
    def pid(self) -> int | None:
        """Ganesha's process id while it runs (tests kill it to prove the restart)."""
        daemon = self._ganesha
        return daemon.pid if daemon is not None and daemon.alive() else None

    def start(self) -> None:
        """Start Ganesha and its bus, wait until both serve, then start the supervisor. Call it
        from a thread that outlives the server (the main thread): Ganesha dies with it."""
        for tool in (GANESHA, DBUS_DAEMON):
            if shutil.which(tool) is None:
                raise FailedPrecondition(
                    f"{tool} not found: install nfs-ganesha and nfs-ganesha-vfs "
                    "(apt-get install nfs-ganesha nfs-ganesha-vfs, or ./scripts/bootstrap as root)"
                )
        self.runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.runtime_dir / "recovery").mkdir(exist_ok=True, mode=0o700)
        self._kill_leftovers()
        self.conf_path.write_text(ganesha_conf(self.settings))
        self._dbus_conf.write_text(dbus_conf(self.bus.socket_path))
        self._spawn()
        self._stopping.clear()
        self._wake_read, self._wake_write = os.pipe()
        self._supervisor = threading.Thread(
            target=self._supervise, name="ganesha-supervisor", daemon=True
        )
        self._supervisor.start()
        log.info(
            "NFS-Ganesha serving NFSv4.1/4.2 on %s:%d (pid %s)",
            self.settings.bind,
            self.settings.port,
            self.pid,
        )

    def stop_supervising(self) -> None:
        """No more restarts from here on; Ganesha keeps serving until stop()."""
        self._stopping.set()

    def stop(self) -> None:
        """Stop Ganesha, then its bus, then the supervisor. The supervisor thread ends last:
        Ganesha dies with the thread that started it (setpriv --pdeathsig, sys.daemon), and a
        restarted Ganesha was started by that thread."""
        self._stopping.set()
        with self._processes:
            self._halt()
        if self._wake_write >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_write, b"x")
        if self._supervisor is not None:
            self._supervisor.join(timeout=self.stop_timeout * 3)
            self._supervisor = None
        for fd in (self._wake_read, self._wake_write):
            if fd >= 0:
                os.close(fd)
        self._wake_read, self._wake_write = -1, -1
        self.bus.close()
        if self._socket_dir != self.runtime_dir:
            with contextlib.suppress(OSError):
                self._socket_dir.rmdir()
        log.info("NFS-Ganesha stopped")

    def wait_restarted(self, count: int, timeout: float) -> bool:
        """Wait until `restarts` reaches `count` and the restart hook has run (for tests)."""
        deadline = time.monotonic() + timeout
        with self._restarted:
            while self.restarts < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._restarted.wait(left)
        return True

    # -- processes --------------------------------------------------------------------------

    def _spawn(self) -> None:
        """Start the bus, then Ganesha on it; wait until Ganesha answers on DBus and TCP."""
        with contextlib.suppress(FileNotFoundError):
            self.bus.socket_path.unlink()
        self._dbus = Daemon(
            [
                DBUS_DAEMON,
                f"--config-file={self._dbus_conf}",
                "--nofork",
                "--nopidfile",
            ],
            log_path=self.runtime_dir / "dbus.log",
        )
        (self.runtime_dir / "dbus.pid").write_text(f"{self._dbus.pid}\n")
        try:
            self._wait(lambda: self.bus.socket_path.exists(), "its private dbus-daemon")
            self._ganesha = Daemon(
                [
                    GANESHA,
                    "-F",
                    "-f",
                    str(self.conf_path),
                    "-L",
                    str(self.log_path),
                    "-p",
                    str(self.runtime_dir / "ganesha.pid"),
                    "-N",
                    "NIV_EVENT",
                ],
                log_path=self.runtime_dir / "ganesha.out",
                env={"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={self.bus.socket_path}"},
            )
            self._wait(self._answers, "NFS-Ganesha")
        except BaseException:
            self._halt()
            raise

    def _answers(self) -> bool:
        """Ganesha serves: its ExportMgr answers on the bus and its NFS port accepts TCP."""
        if self._ganesha is None or not self._ganesha.alive():
            raise Internal(
                f"NFS-Ganesha exited during start-up (code {self._ganesha_code()}): "
                f"{self._log_tail()}"
            )
        try:
            self.bus.export_ids()
        except GaneshaBusError:
            return False
        try:
            with socket.create_connection((self._local_host(), self.settings.port), timeout=1.0):
                return True
        except OSError:
            return False

    def _wait(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not ready():
            if self._dbus is not None and not self._dbus.alive():
                raise Internal(
                    f"the private dbus-daemon exited during start-up: "
                    f"{_tail(self.runtime_dir / 'dbus.log')}"
                )
            if time.monotonic() > deadline:
                raise Internal(
                    f"{what} did not answer within {self.start_timeout:.0f}s: {self._log_tail()}"
                )
            time.sleep(_POLL_INTERVAL)

    def _halt(self) -> None:
        """Stop Ganesha (SIGTERM, then SIGKILL) and then its bus; forget their pid files."""
        self.bus.close()
        for daemon, pid_file in (
            (self._ganesha, "ganesha.pid"),
            (self._dbus, "dbus.pid"),
        ):
            if daemon is not None:
                daemon.stop(self.stop_timeout)
            with contextlib.suppress(FileNotFoundError):
                (self.runtime_dir / pid_file).unlink()
        self._ganesha = self._dbus = None

    def _kill_leftovers(self) -> None:
        """A crash of sharevol orphans its Ganesha (own session): kill it before starting."""
        kill_stale(self.runtime_dir / "ganesha.pid", str(self.conf_path))
        kill_stale(self.runtime_dir / "dbus.pid", str(self._dbus_conf))

    # -- supervision ------------------------------------------------------------------------

    def _supervise(self) -> None:
        """Wait for either process to exit; restart the pair unless stopping."""
        failures = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            dead = self._wait_for_exit()
            if dead is None or self._stopping.is_set():
                return
            if time.monotonic() - started > STABLE:
                failures = 0
            if self._ganesha is not None:
                log.error(
                    "%s exited (Ganesha exit code %s); restarting NFS-Ganesha. Last log lines: %s",
                    dead,
                    self._ganesha_code(),
                    self._log_tail(),
                )
            delay = BACKOFF[min(failures, len(BACKOFF) - 1)]
            failures += 1
            if delay and self._stopping.wait(delay):
                return
            with self._processes:
                if self._stopping.is_set():
                    return
                try:
                    self._halt()
                    self._spawn()
                except (Internal, CommandFailed, OSError) as exc:
                    log.error("restarting NFS-Ganesha failed (retrying in a while): %s", exc)
                    self._halt()  # both None: the next loop retries after the next back-off
                    continue
            if self.on_restart is not None:
                try:
                    self.on_restart()
                except Exception:
                    log.exception("re-adding the exports after a Ganesha restart failed")
            with self._restarted:
                self.restarts += 1
                self._restarted.notify_all()
            log.warning("NFS-Ganesha restarted (pid %s); exports re-added", self.pid)

    def _wait_for_exit(self) -> str | None:
        """The name of the first of the pair to exit, or None when stop() woke us."""
        ganesha, bus = self._ganesha, self._dbus
        if ganesha is None or bus is None:
            return GANESHA
        poller = select.poll()
        poller.register(self._wake_read, select.POLLIN)
        poller.register(ganesha.pidfd, select.POLLIN)
        poller.register(bus.pidfd, select.POLLIN)
        while True:
            events = poller.poll()
            fds = {fd for fd, _event in events}
            if self._wake_read in fds or self._stopping.is_set():
                return None
            if ganesha.pidfd in fds:
                return GANESHA
            if bus.pidfd in fds:
                return DBUS_DAEMON

    # -- helpers ----------------------------------------------------------------------------

    @property
    def _dbus_conf(self) -> Path:
        return self.runtime_dir / "dbus.conf"

    def _choose_socket_dir(self) -> Path:
        """The runtime dir, unless its path is too long for a unix socket (108 bytes); then a
        fresh 0700 directory under the system's temp dir."""
        if len(str(self.runtime_dir / "dbus.sock").encode()) <= _MAX_SOCKET_PATH:
            return self.runtime_dir
        return Path(tempfile.mkdtemp(prefix="sharevol-dbus-"))

    def _local_host(self) -> str:
        """Where this machine reaches Ganesha: its bind address, or loopback for a wildcard."""
        address = ipaddress.ip_address(self.settings.bind)
        if address.is_unspecified:
            return "::1" if address.version == 6 else "127.0.0.1"
        return str(address)

    def _ganesha_code(self) -> int | None:
        return self._ganesha.exit_code() if self._ganesha is not None else None

    def _log_tail(self) -> str:
        return _tail(self.log_path) or _tail(self.runtime_dir / "ganesha.out")


def _tail(path: Path, lines: int = 3) -> str:
    """The last lines of a log, for error messages that say what Ganesha complained about."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])
