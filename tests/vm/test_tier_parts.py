"""Host-side unit tests of the VM tier's parts (no VM, no root): the guard that keeps disk
formatting inside the VM, junit parsing, the job script, and the cache's version ordering."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import in_ci
from tests.vm import kernel, runner
from tests.vm.guest import CMDLINE_MARKER, NotInVm, in_vm, vm_disk_path
from tests.vm.junit import failed_tests, outcome_counts


def fake_guest(tmp_path: Path, cmdline: str, disks: dict[str, str]) -> dict[str, Path]:
    """A /proc/cmdline, /sys/block with vdX/serial files and an empty mount table."""
    (tmp_path / "cmdline").write_text(cmdline + "\n")
    for name, serial in disks.items():
        (tmp_path / "block" / name).mkdir(parents=True)
        (tmp_path / "block" / name / "serial").write_text(serial)
    (tmp_path / "mounts").write_text("overlay / overlay rw 0 0\n")
    return {"cmdline": tmp_path / "cmdline", "sys_block": tmp_path / "block",
            "mounts": tmp_path / "mounts"}  # fmt: skip


def test_this_host_is_not_the_vm() -> None:
    assert not in_vm()


@pytest.mark.parametrize("line", ["quiet", "sharevol_vm=10", "xsharevol_vm=1", "sharevol_vm"])
def test_marker_must_be_a_whole_word(tmp_path: Path, line: str) -> None:
    (tmp_path / "cmdline").write_text(f"console=ttyS0 {line} panic=-1\n")
    assert not in_vm(tmp_path / "cmdline")


def test_disk_lookup_refuses_outside_the_vm(tmp_path: Path) -> None:
    paths = fake_guest(tmp_path, "console=ttyS0 quiet", {"vda": "vmt-xfs"})
    with pytest.raises(NotInVm, match="refusing"):
        vm_disk_path("vmt-xfs", **paths)


def test_disk_is_found_by_serial_not_by_name(tmp_path: Path) -> None:
    paths = fake_guest(tmp_path, f"quiet {CMDLINE_MARKER}", {"vda": "vmt-ext4", "vdb": "vmt-xfs"})
    assert vm_disk_path("vmt-xfs", **paths) == Path("/dev/vdb")
    assert vm_disk_path("vmt-ext4", **paths) == Path("/dev/vda")
    with pytest.raises(LookupError, match="vmt-nope"):
        vm_disk_path("vmt-nope", **paths)


def test_mounted_disk_is_refused(tmp_path: Path) -> None:
    paths = fake_guest(tmp_path, CMDLINE_MARKER, {"vdb": "vmt-xfs"})
    paths["mounts"].write_text("/dev/vdb /tmp/x xfs rw,prjquota 0 0\n")
    with pytest.raises(RuntimeError, match="still mounted"):
        vm_disk_path("vmt-xfs", **paths)


def test_failed_guest_tests_are_named_from_junit(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.vm.test_xfs" name="test_ok"/>'
        '<testcase classname="tests.vm.test_xfs" name="test_limit">'
        '<failure message="assert 5 == 4&#10;more">trace</failure></testcase>'
        '<testcase classname="tests.vm.test_ext4" name="test_boom">'
        '<error message="fixture broke">trace</error></testcase>'
        "</testsuite></testsuites>"
    )
    assert failed_tests(junit) == [
        "tests.vm.test_xfs::test_limit [failure]: assert 5 == 4",
        "tests.vm.test_ext4::test_boom [error]: fixture broke",
    ]
    assert outcome_counts(junit) == "3 tests: 1 passed, 2 failed, 0 skipped"


def test_unreadable_junit_is_said_not_hidden(tmp_path: Path) -> None:
    (tmp_path / "junit.xml").write_text("<testsuites><testcase")
    assert failed_tests(tmp_path / "junit.xml")[0].startswith("(unreadable junit.xml")
    assert outcome_counts(tmp_path / "missing.xml").startswith("no readable missing.xml")


def test_job_script_quotes_arguments_and_writes_rc_atomically(tmp_path: Path) -> None:
    job = runner.VmJob(("tests/vm", "-k", "a and not b"), env={"SHAREVOL_X": "it's"})
    script = runner._job_script(job, tmp_path)
    assert "'a and not b'" in script
    assert "export SHAREVOL_X='it'\"'\"'s'" in script
    assert "-m vm -p no:cacheprovider" in script
    assert script.rstrip().endswith(f"mv {tmp_path}/rc.new {tmp_path}/rc")


def test_job_script_refuses_bad_env_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not environment variable names"):
        runner._job_script(runner.VmJob(env={"A;reboot": "x"}), tmp_path)


def test_extra_mounts_finds_the_mount_holding_a_path() -> None:
    assert runner._extra_mounts([Path("/proc/self")]) == [Path("/proc")]
    assert runner._extra_mounts([Path("/")]) == []


def test_releases_sort_by_number_not_text() -> None:
    releases = ["6.1.0-9-cloud-amd64", "6.1.0-56-cloud-amd64", "6.1.0-10-cloud-amd64"]
    assert max(releases, key=kernel._release_key) == "6.1.0-56-cloud-amd64"


def test_static_elf_check_tells_busybox_static_from_python() -> None:
    assert not kernel.is_static_elf(Path(sys.executable).resolve())
    busybox = shutil.which("busybox")
    if busybox is None:
        reason = "busybox is not installed (package busybox-static)"
        if in_ci():
            pytest.fail(f"{reason} (CI=true: must not skip)")
        pytest.skip(reason)
    assert kernel.is_static_elf(Path(busybox))
