"""Image/block volume rules and controller expansion without root: the layout a request makes,
sizes and limits, the ext4 grow decision, losetup handling through the fake runner, and
expansion over a real PlainPool in a tmp dir (mkfs faked at the runner)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from sharevol.catalog.records import AccessMode, Capability
from sharevol.catalog.store import Catalog
from sharevol.errors import InvalidArgument, NotFound, OutOfRange, ResourceExhausted
from sharevol.pools.plain import PlainPool
from sharevol.service.expansion import VolumeExpander, target_size
from sharevol.service.images import (
    MIN_IMAGE_BYTES,
    ImageFiles,
    Layout,
    fit_capacity,
    quota_limit_bytes,
    volume_layout,
)
from sharevol.service.locate import PoolHandle
from sharevol.service.params import parse_parameters
from sharevol.service.provisioning import CreateRequest, Provisioner
from sharevol.sys import blockfs, loop
from sharevol.sys.fake import FakeRunner

MiB, GiB = 1024**2, 1024**3
RWO = Capability(access_mode=AccessMode.SINGLE_NODE_MULTI_WRITER)
RWX = Capability(access_mode=AccessMode.MULTI_NODE_MULTI_WRITER)
MNSW = Capability(access_mode=AccessMode.MULTI_NODE_SINGLE_WRITER)
ROX = Capability(access_mode=AccessMode.MULTI_NODE_READER_ONLY)


def block(mode: AccessMode = AccessMode.SINGLE_NODE_MULTI_WRITER) -> Capability:
    return Capability(access_mode=mode, access_type="block")


# ---- layout ---------------------------------------------------------------------------------


def layout(params: dict[str, str], *caps: Capability) -> Layout:
    return volume_layout(parse_parameters(params), caps or (RWO,))


def test_a_plain_request_makes_a_directory_volume() -> None:
    assert layout({}) == Layout("directory")
    # A capability fs_type (external-provisioner's default fstype) means nothing to a folder.
    assert layout({}, Capability(access_mode=AccessMode.SINGLE_NODE_WRITER, fs_type="ext4")) == (
        Layout("directory")
    )


def test_the_block_access_type_makes_a_block_volume() -> None:
    assert layout({}, block()) == Layout("block")
    assert layout({}, block(AccessMode.MULTI_NODE_MULTI_WRITER)) == Layout("block")
    assert layout({}, block(AccessMode.MULTI_NODE_READER_ONLY)) == Layout("block")


@pytest.mark.parametrize(
    ("params", "caps"),
    [
        ({}, (block(AccessMode.MULTI_NODE_SINGLE_WRITER),)),
        ({}, (block(), RWO)),
        ({"type": "image"}, (block(),)),
        ({"fsType": "xfs"}, (block(),)),
        ({"fsType": "xfs"}, (RWO,)),
        ({"type": "image"}, (RWX,)),
        ({"type": "image"}, (MNSW,)),
        (
            {"type": "image", "fsType": "xfs"},
            (Capability(access_mode=AccessMode.SINGLE_NODE_WRITER, fs_type="ext4"),),
        ),
        (
            {"type": "image"},
            (Capability(access_mode=AccessMode.SINGLE_NODE_WRITER, fs_type="btrfs"),),
        ),
    ],
)
def test_conflicting_or_unsupported_layouts_are_invalid_argument(
    params: dict[str, str], caps: tuple[Capability, ...]
) -> None:
    with pytest.raises(InvalidArgument):
        layout(params, *caps)


def test_image_filesystem_comes_from_the_parameter_or_the_capability() -> None:
    assert layout({"type": "image"}) == Layout("image", "ext4")
    assert layout({"type": "image", "fsType": "xfs"}) == Layout("image", "xfs")
    xfs_cap = Capability(access_mode=AccessMode.SINGLE_NODE_SINGLE_WRITER, fs_type="xfs")
    assert layout({"type": "image"}, xfs_cap) == Layout("image", "xfs")
    assert layout({"type": "image"}, ROX) == Layout("image", "ext4")


def test_unknown_type_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="type"):
        parse_parameters({"type": "zvol"})


# ---- sizes and limits -----------------------------------------------------------------------


def test_small_images_are_raised_to_their_filesystem_minimum_unless_the_limit_forbids() -> None:
    xfs = Layout("image", "xfs")
    assert fit_capacity(xfs, 64 * MiB, 0) == MIN_IMAGE_BYTES["xfs"]
    assert fit_capacity(xfs, 512 * MiB, 0) == 512 * MiB
    with pytest.raises(OutOfRange, match="xfs"):
        fit_capacity(xfs, 64 * MiB, 128 * MiB)
    assert fit_capacity(Layout("directory"), MiB, 0) == MiB
    assert fit_capacity(Layout("block"), MiB, 0) == MiB


def test_image_quota_limit_leaves_room_for_metadata_and_rewrites() -> None:
    assert quota_limit_bytes("directory", GiB) == GiB
    for kind in ("image", "block"):
        limit = quota_limit_bytes(kind, GiB)
        assert limit >= 2 * GiB + GiB // 32 + 16 * MiB


# ---- ext4 geometry --------------------------------------------------------------------------

DUMPE2FS = """\
Filesystem volume name:   <none>
Block count:              65536
Reserved block count:     3276
First block:              1
Block size:               1024
Reserved GDT blocks:      256
Blocks per group:         8192
Inode blocks per group:   512
"""


def test_dumpe2fs_output_gives_the_geometry() -> None:
    geometry = blockfs.parse_dumpe2fs(DUMPE2FS)
    assert geometry.size_bytes == 64 * MiB
    assert geometry.blocks_per_group == 8192
    with pytest.raises(ValueError, match="block_size"):
        blockfs.parse_dumpe2fs("Block count: 1\n")


def test_ext4_grows_only_when_resize2fs_would_add_a_usable_group() -> None:
    geometry = blockfs.parse_dumpe2fs(DUMPE2FS)  # its last group is one block short
    assert not blockfs.ext4_would_grow(geometry, 64 * MiB)
    assert blockfs.ext4_would_grow(geometry, 64 * MiB + 1024)  # fills the last group
    assert blockfs.ext4_would_grow(geometry, 96 * MiB)
    full = dataclasses.replace(geometry, block_count=65537)  # 8 whole groups of 8192 + block 0
    assert not blockfs.ext4_would_grow(full, (65537 + 3) * 1024)  # a new group too small
    assert not blockfs.ext4_would_grow(full, (65537 + 600) * 1024)  # below metadata + 50
    assert blockfs.ext4_would_grow(full, (65537 + 1000) * 1024)


def test_offline_resize_checks_first_and_accepts_fixed_errors() -> None:
    runner = FakeRunner()
    runner.script(["e2fsck"], returncode=1)
    blockfs.resize_ext4_offline(runner, "/dev/loop9")
    assert runner.calls == [["e2fsck", "-f", "-p", "/dev/loop9"], ["resize2fs", "/dev/loop9"]]
    runner = FakeRunner()
    runner.script(["e2fsck"], returncode=4, stderr="UNEXPECTED INCONSISTENCY")
    with pytest.raises(Exception, match="e2fsck"):
        blockfs.resize_ext4_offline(runner, "/dev/loop9")
    assert ["resize2fs", "/dev/loop9"] not in runner.calls


def test_online_ext4_resize_reports_a_refusal_for_lack_of_privilege() -> None:
    runner = FakeRunner()
    runner.script(["resize2fs"], returncode=1, stderr="resize2fs: Permission denied to resize")
    assert blockfs.resize_ext4_online(runner, "/dev/loop9") is False
    runner.script(["resize2fs"], returncode=1, stderr="resize2fs: Bad magic number")
    with pytest.raises(Exception, match="Bad magic"):
        blockfs.resize_ext4_online(runner, "/dev/loop9")


# ---- losetup --------------------------------------------------------------------------------


def test_attach_reuses_a_device_that_backs_the_file_with_the_same_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, ro in (("loop6", "1"), ("loop7", "0")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "ro").write_text(f"{ro}\n")
    monkeypatch.setattr(loop, "SYS_BLOCK", tmp_path)
    runner = FakeRunner()
    runner.script(["losetup", "--noheadings"], stdout="/dev/loop6\n/dev/loop7\n")
    assert loop.attach(runner, tmp_path / "disk.img") == "/dev/loop7"
    assert loop.attach(runner, tmp_path / "disk.img", read_only=True) == "/dev/loop6"
    assert all("--find" not in call for call in runner.calls)


def test_attach_sets_up_a_new_device_with_direct_io_off(tmp_path: Path) -> None:
    runner = FakeRunner()
    runner.script(["losetup", "--find"], stdout="/dev/loop3\n")
    assert loop.attach(runner, tmp_path / "disk.img", read_only=True) == "/dev/loop3"
    assert runner.calls[-1] == [
        "losetup", "--find", "--show", "--direct-io=off", "--read-only", "--",
        str(tmp_path / "disk.img"),
    ]  # fmt: skip
    assert all(timeout <= loop.LOSETUP_TIMEOUT for timeout in runner.timeouts)


def test_a_forged_device_name_is_never_passed_on() -> None:
    runner = FakeRunner()
    runner.script(["losetup", "--noheadings"], stdout="/dev/sda\n")
    with pytest.raises(Exception, match="not a loop device"):
        loop.devices_of(runner, Path("/x/disk.img"))
    with pytest.raises(Exception, match="not a loop device"):
        loop.detach(runner, "/dev/loop1; rm -rf /")


# ---- expansion over a plain pool ------------------------------------------------------------


@pytest.fixture
def provisioner(tmp_path: Path) -> Provisioner:
    root = tmp_path / "pool"
    root.mkdir()
    pool = PlainPool("plain", root)
    pool.start()
    catalog = Catalog(root)
    catalog.ensure()
    return Provisioner(
        {"plain": PoolHandle(pool, catalog)}, "plain", "node-1", images=ImageFiles(FakeRunner())
    )


def test_target_size_rules() -> None:
    assert target_size(64 * MiB, 32 * MiB, 0) == 64 * MiB  # already bigger: unchanged
    assert target_size(64 * MiB, 64 * MiB, 0) == 64 * MiB
    assert target_size(64 * MiB, 65 * MiB + 1, 0) == 65 * MiB + 4096
    assert target_size(64 * MiB, 65 * MiB + 1, 65 * MiB + 2) == 65 * MiB + 2
    assert target_size(64 * MiB, 0, 128 * MiB) == 64 * MiB
    with pytest.raises(InvalidArgument):
        target_size(64 * MiB, 0, 0)
    with pytest.raises(OutOfRange):
        target_size(64 * MiB, 0, 32 * MiB)
    with pytest.raises(OutOfRange):
        target_size(64 * MiB, 96 * MiB, 80 * MiB)


def test_expanding_a_block_volume_grows_its_sparse_image(provisioner: Provisioner) -> None:
    record = provisioner.create_volume(
        CreateRequest(name="raw", capabilities=(block(),), required_bytes=8 * MiB)
    )
    assert record.kind == "block" and record.quota_enforced
    handle = provisioner.pools()["plain"]
    image = handle.pool.volume_path(record.directory) / "disk.img"
    assert image.stat().st_size == 8 * MiB and image.stat().st_blocks == 0
    expanded = VolumeExpander(provisioner).expand(record.volume_id, 24 * MiB, 0)
    assert expanded.capacity_bytes == 24 * MiB and expanded.node_expansion_required
    assert image.stat().st_size == 24 * MiB
    assert handle.catalog.read_volume(record.uuid).capacity_bytes == 24 * MiB  # type: ignore[union-attr]


def test_an_image_volume_is_formatted_under_a_partial_name(provisioner: Provisioner) -> None:
    runner = provisioner.images._runner
    assert isinstance(runner, FakeRunner)
    record = provisioner.create_volume(
        CreateRequest(
            name="db", capabilities=(RWO,), required_bytes=32 * MiB,
            parameters={"type": "image"},
        )
    )  # fmt: skip
    mkfs = [call for call in runner.calls if call[0].startswith("mkfs")]
    assert mkfs and mkfs[0][:2] == ["mkfs.ext4", "-F"]
    assert mkfs[0][-1].endswith("/.disk.img.new")
    folder = provisioner.pools()["plain"].pool.volume_path(record.directory)
    assert sorted(os.listdir(folder)) == ["disk.img"]


def test_expansion_beyond_the_pool_is_refused_and_changes_nothing(
    provisioner: Provisioner,
) -> None:
    record = provisioner.create_volume(
        CreateRequest(name="d", capabilities=(RWO,), required_bytes=8 * MiB)
    )
    total = provisioner.pools()["plain"].pool.space().total_bytes
    with pytest.raises(OutOfRange):
        VolumeExpander(provisioner).expand(record.volume_id, total + GiB, 0)
    half = total // 2 // 4096 * 4096
    other = provisioner.create_volume(
        CreateRequest(name="e", capabilities=(RWO,), required_bytes=half)
    )
    with pytest.raises(ResourceExhausted):
        VolumeExpander(provisioner).expand(record.volume_id, total - total // 4, 0)
    assert provisioner.get(record.volume_id).capacity_bytes == 8 * MiB
    assert provisioner.get(other.volume_id).capacity_bytes == half
    with pytest.raises(NotFound):
        VolumeExpander(provisioner).expand("plain/" + "0" * 32, GiB, 0)


def test_expansion_retry_never_records_less_than_the_image_already_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image grew, then the record write failed; a retry asking for less (Kubernetes lets a
    user lower a PVC after a failed resize) must record the image's real size."""
    from sharevol.errors import Internal

    root = tmp_path / "pool"
    root.mkdir()
    pool = PlainPool("plain", root)
    pool.start()
    catalog = Catalog(root)
    catalog.ensure()
    provisioner = Provisioner(
        {"plain": PoolHandle(pool, catalog)}, "plain", "node-1", images=ImageFiles(FakeRunner())
    )
    block = Capability(access_type="block", access_mode=AccessMode.SINGLE_NODE_WRITER)
    record = provisioner.create_volume(
        CreateRequest(name="raw", capabilities=(block,), required_bytes=8 * MiB)
    )
    image = pool.volume_path(record.directory) / "disk.img"
    written = catalog.put_volume

    def crash(_: object) -> None:
        raise Internal("simulated crash before the record is written")

    monkeypatch.setattr(catalog, "put_volume", crash)
    with pytest.raises(Internal):
        VolumeExpander(provisioner).expand(record.volume_id, 32 * MiB, 0)
    monkeypatch.setattr(catalog, "put_volume", written)

    answer = VolumeExpander(provisioner).expand(record.volume_id, 16 * MiB, 0)

    assert answer.capacity_bytes == image.stat().st_size == 32 * MiB
    assert provisioner.get(record.volume_id).capacity_bytes == 32 * MiB
