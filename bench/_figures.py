"""Timing and figures of the provisioning benchmark: phases, percentiles, targets, report.

Kept apart from bench/provision.py, which makes the filesystem and the server and runs them.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

TARGET_RATIO = 1 / 3
TARGET_P99_CREATE_MS = 20.0


@dataclass(frozen=True)
class Phase:
    """The figures of one measured phase: `ops` operations in `seconds` of wall time."""

    name: str
    clients: int
    ops: int
    seconds: float
    latencies: tuple[float, ...]

    @property
    def rate(self) -> float:
        return self.ops / self.seconds

    def percentile_ms(self, q: float) -> float:
        """Nearest-rank percentile of the per-operation latencies, in milliseconds."""
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] * 1000

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "clients": self.clients, "ops": self.ops,
            "seconds": round(self.seconds, 4), "ops_per_s": round(self.rate, 1),
            "p50_ms": round(self.percentile_ms(50), 3), "p99_ms": round(self.percentile_ms(99), 3),
        }  # fmt: skip


def cycle_rate(create: Phase, delete: Phase) -> float:
    """Volumes per second through a full create + delete cycle (N / (t_create + t_delete))."""
    return create.ops / (create.seconds + delete.seconds)


def progress(phase: str) -> None:
    """A line on stderr per phase: a 1000-volume run takes a while and stdout is the report."""
    print(f"running {phase} ...", file=sys.stderr, flush=True)


def timed(name: str, clients: int, calls: Sequence[Callable[[], object]]) -> Phase:
    """Run `calls` one after another in this thread; wall time and per-call latencies."""
    progress(name)
    latencies: list[float] = []
    started = time.perf_counter()
    for call in calls:
        before = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - before)
    return Phase(name, clients, len(calls), time.perf_counter() - started, tuple(latencies))


def timed_concurrently(name: str, shares: Sequence[Sequence[Callable[[], object]]]) -> Phase:
    """Run each share of calls in its own thread, all released at once; the phase lasts from
    the release to the end of the slowest thread. The first error is re-raised."""
    progress(name)
    barrier = threading.Barrier(len(shares) + 1)
    latencies: list[list[float]] = [[] for _ in shares]
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        barrier.wait()
        try:
            for call in shares[index]:
                before = time.perf_counter()
                call()
                latencies[index].append(time.perf_counter() - before)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(shares))]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if errors:
        raise errors[0]
    flat = tuple(x for share in latencies for x in share)
    return Phase(name, len(shares), len(flat), seconds, flat)



def verdicts(phases: dict[str, Phase], clients: int) -> list[dict[str, Any]]:
    """The issue's targets, each with its figure and PASS/FAIL."""
    floor = cycle_rate(phases["floor create"], phases["floor delete"])
    seq = cycle_rate(phases["gRPC create seq"], phases["gRPC delete seq"])
    par = cycle_rate(phases[f"gRPC create x{clients}"], phases[f"gRPC delete x{clients}"])
    rows = [
        ("create+delete rate, 1 client / floor", seq / floor, f"{seq:.0f} vs {floor:.0f} vol/s",
         ">=", TARGET_RATIO),
        (f"create+delete rate, {clients} clients / floor", par / floor,
         f"{par:.0f} vs {floor:.0f} vol/s", ">=", TARGET_RATIO),
        ("p99 CreateVolume, 1 client (ms)", phases["gRPC create seq"].percentile_ms(99), "",
         "<", TARGET_P99_CREATE_MS),
        (f"p99 CreateVolume, {clients} clients (ms)",
         phases[f"gRPC create x{clients}"].percentile_ms(99), "", "<", TARGET_P99_CREATE_MS),
    ]  # fmt: skip
    return [
        {"target": name, "value": round(value, 3), "detail": detail, "op": op, "bound": bound,
         "pass": value >= bound if op == ">=" else value < bound}
        for name, value, detail, op, bound in rows
    ]  # fmt: skip


def print_report(env: dict[str, Any], phases: list[Phase], results: list[dict[str, Any]]) -> None:
    print(f"sharevol provisioning benchmark, {env['date']}")
    print(f"  {env['volumes']} volumes of 64 MiB; btrfs with quotas on a loop device "
          f"({env['image']} sparse image on {env['backing_fs']}); server mode all, in-process")
    print(f"  kernel {env['kernel']}, {env['cpus']} CPUs, Python {env['python']}, "
          f"grpcio {env['grpcio']}")
    print(f"  load average (1 min) {env['load_before']} before, {env['load_after']} after: "
          "other work on the machine shows up in the figures")
    print()
    print(f"{'phase':<20}{'clients':>8}{'ops':>7}{'seconds':>9}{'ops/s':>9}"
          f"{'p50 ms':>9}{'p99 ms':>9}")
    measured = [p for p in phases if not p.name.startswith("ref ")]
    reference = [p for p in phases if p.name.startswith("ref ")]
    for phase in [*measured, *reference]:
        if phase is reference[0]:
            print("reference (not targets): one RPC; one durable record; floor + catalog writes")
        print(f"{phase.name:<20}{phase.clients:>8}{phase.ops:>7}{phase.seconds:>9.3f}"
              f"{phase.rate:>9.0f}{phase.percentile_ms(50):>9.3f}{phase.percentile_ms(99):>9.3f}")
    print()
    print("targets (create+delete rate = N / (create seconds + delete seconds); "
          "the target of record is the 1-client one)")
    for row in results:
        verdict = "PASS" if row["pass"] else "FAIL"
        detail = f"  ({row['detail']})" if row["detail"] else ""
        bound = f"{row['bound']:.3f}" if row["op"] == ">=" else f"{row['bound']:g}"
        print(f"  {row['target']:<38} {row['value']:>8.3f} {row['op']} {bound:<6} "
              f"{verdict}{detail}")
    print("context (not targets)")
    for line in context_lines(context(phases, env["clients"])):
        print(f"  {line}")


def context(phases: list[Phase], clients: int) -> dict[str, float]:
    """Why the rate target is where it is: the time budget it allows per create+delete, what
    one RPC and one durable record cost, and end-to-end against a floor that is durable too."""
    by_name = {p.name: p for p in phases}
    floor = cycle_rate(by_name["floor create"], by_name["floor delete"])
    durable = cycle_rate(by_name["ref durable create"], by_name["ref durable delete"])
    seq = cycle_rate(by_name["gRPC create seq"], by_name["gRPC delete seq"])
    par = cycle_rate(by_name[f"gRPC create x{clients}"], by_name[f"gRPC delete x{clients}"])
    return {
        "budget_ms_per_cycle_at_target": round(1000 / (TARGET_RATIO * floor), 3),
        "probe_p50_ms": round(by_name["ref gRPC Probe"].percentile_ms(50), 3),
        "record_write_p50_ms": round(by_name["ref catalog write"].percentile_ms(50), 3),
        "durable_floor_cycle_rate": round(durable, 1),
        "seq_over_durable_floor": round(seq / durable, 3),
        "concurrent_over_durable_floor": round(par / durable, 3),
    }


def context_lines(figures: dict[str, float]) -> list[str]:
    return [
        f"budget per create+delete at the rate target: {figures['budget_ms_per_cycle_at_target']}"
        f" ms; the cycle makes 2 RPCs (Probe p50 {figures['probe_p50_ms']} ms), 3 durable record"
        f" writes (p50 {figures['record_write_p50_ms']} ms each) and a durable unlink",
        f"durable floor (floor + the same catalog writes, no gRPC): "
        f"{figures['durable_floor_cycle_rate']:.0f} vol/s; end-to-end over it: "
        f"{figures['seq_over_durable_floor']} with 1 client, "
        f"{figures['concurrent_over_durable_floor']} concurrent",
    ]
