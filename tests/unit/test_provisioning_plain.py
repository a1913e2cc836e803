"""Provisioner over a real PlainPool in a tmp dir (no root): idempotency, errors, budgets,
delete policies, paging, restarts and directory ownership, checked on disk as well as in memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest

from sharevol.catalog.records import AccessMode, Capability, VolumeRecord
from sharevol.catalog.store import Catalog
from sharevol.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from sharevol.pools.base import Pool
from sharevol.pools.plain import PlainPool
from sharevol.service.locate import PoolHandle, VolumeLocator
from sharevol.service.provisioning import CreateRequest, Provisioner, volume_context

MiB, GiB = 1024**2, 1024**3
RWX = Capability(access_mode=AccessMode.MULTI_NODE_MULTI_WRITER)
RWO = Capability(access_mode=AccessMode.SINGLE_NODE_WRITER)
TEMPLATE = "${pvc.metadata.namespace}-${pvc.metadata.name}"


class Crash(BaseException):
    """The process dies at this point: no SharevolError handler runs, nothing after it does."""


def crash(*_args: object) -> NoReturn:
    raise Crash


def make_pool(root: Path, name: str = "plain") -> PlainPool:
    root.mkdir(exist_ok=True)
    pool = PlainPool(name, root)
    pool.start()
    return pool


def handle_of(pool: PlainPool, overcommit: float = 1.0) -> PoolHandle:
    catalog = Catalog(pool.root)
    catalog.ensure()
    return PoolHandle(pool, catalog, overcommit)


def provisioner_of(
    *handles: PoolHandle, mounts_of: Callable[[VolumeRecord], list[str]] | None = None
) -> Provisioner:
    """A fresh Provisioner: what a (re)started controller process builds."""
    pools = {h.pool.name: h for h in handles}
    return Provisioner(pools, handles[0].pool.name, "node-1", mounts_of=mounts_of)


def request(
    name: str = "pvc-1", required: int = 64 * MiB, limit: int = 0, **parameters: str
) -> CreateRequest:
    return CreateRequest(
        name=name, capabilities=(RWX,), required_bytes=required, limit_bytes=limit,
        parameters=parameters,
    )  # fmt: skip


def templated(name: str, namespace: str = "team-a", **extra: str) -> CreateRequest:
    """A request as external-provisioner --extra-create-metadata sends it, with a subDir."""
    parameters = {
        "subDir": TEMPLATE,
        "csi.storage.k8s.io/pvc/name": name,
        "csi.storage.k8s.io/pvc/namespace": namespace,
        **extra,
    }
    return CreateRequest(name=f"pv-{namespace}-{name}", capabilities=(RWX,), parameters=parameters)


def volume_dirs(pool: Pool) -> list[str]:
    return sorted(os.listdir(pool.root / "volumes"))


@pytest.fixture
def pool(tmp_path: Path) -> PlainPool:
    return make_pool(tmp_path / "pool")


@pytest.fixture
def handle(pool: PlainPool) -> PoolHandle:
    return handle_of(pool)


@pytest.fixture
def prov(handle: PoolHandle) -> Provisioner:
    return provisioner_of(handle)


# -- create -------------------------------------------------------------------------------------


def test_create_makes_a_ready_volume_with_its_record_on_the_pool(
    prov: Provisioner, handle: PoolHandle, pool: PlainPool
) -> None:
    record = prov.create_volume(request(required=100 * MiB))

    assert record.state == "ready"
    assert record.capacity_bytes == 100 * MiB
    assert record.directory == record.uuid
    assert record.volume_id == f"plain/{record.uuid}"
    assert not record.quota_enforced
    assert pool.volume_path(record.directory).is_dir()
    assert handle.catalog.read_volume(record.uuid) == record
    assert volume_context(record)["sharevol.csi.io/quota"] == "not enforced"


def test_create_same_name_same_request_returns_the_same_volume(
    prov: Provisioner, pool: PlainPool
) -> None:
    first = prov.create_volume(request())

    again = prov.create_volume(request())

    assert again == first
    assert volume_dirs(pool) == [first.directory]


def test_create_same_name_with_a_range_holding_the_size_returns_it(prov: Provisioner) -> None:
    first = prov.create_volume(request(required=64 * MiB))

    assert prov.create_volume(request(required=32 * MiB, limit=128 * MiB)) == first


@pytest.mark.parametrize(
    ("changed", "reason"),
    [
        (request(required=128 * MiB), "outside the requested range"),
        (request(required=16 * MiB, limit=32 * MiB), "outside the requested range"),
        (request(onDelete="retain"), "other parameters"),
        (CreateRequest(name="pvc-1", capabilities=(RWO,), required_bytes=64 * MiB),
         "other volume capabilities"),
    ],
)  # fmt: skip
def test_create_same_name_incompatible_is_already_exists(
    prov: Provisioner, pool: PlainPool, changed: CreateRequest, reason: str
) -> None:
    first = prov.create_volume(request())

    with pytest.raises(AlreadyExists, match=reason):
        prov.create_volume(changed)

    assert volume_dirs(pool) == [first.directory]
    assert prov.get(first.volume_id) == first


def test_create_same_name_in_another_pool_is_already_exists(tmp_path: Path) -> None:
    one = handle_of(make_pool(tmp_path / "one", "one"))
    two = handle_of(make_pool(tmp_path / "two", "two"))
    prov = provisioner_of(one, two)
    prov.create_volume(request(pool="one"))

    with pytest.raises(AlreadyExists):
        prov.create_volume(request(pool="two"))

    assert volume_dirs(two.pool) == []


def test_create_in_an_unknown_pool_is_invalid_argument_listing_the_pools(
    prov: Provisioner, pool: PlainPool
) -> None:
    with pytest.raises(InvalidArgument, match=r"unknown pool 'nope' \(pools: plain\)"):
        prov.create_volume(request(pool="nope"))

    assert volume_dirs(pool) == []


def test_create_with_mutable_parameters_is_invalid_argument(prov: Provisioner) -> None:
    with pytest.raises(InvalidArgument, match="no mutable parameters"):
        prov.create_volume(
            CreateRequest(name="pvc-1", capabilities=(RWX,), mutable_parameters={"iops": "10"})
        )


def test_create_with_an_unknown_parameter_leaves_nothing(
    prov: Provisioner, handle: PoolHandle, pool: PlainPool
) -> None:
    with pytest.raises(InvalidArgument, match="unknown parameter 'fstype'"):
        prov.create_volume(request(fstype="ext4"))

    assert volume_dirs(pool) == []
    assert handle.catalog.load_volumes() == []


def test_a_failing_pool_create_leaves_no_record_and_no_directory(
    prov: Provisioner, handle: PoolHandle, pool: PlainPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_create = pool.create_volume
    calls: list[str] = []

    def fail_once(directory: str, capacity_bytes: int) -> dict[str, int | str]:
        calls.append(directory)
        if len(calls) == 1:
            real_create(directory, capacity_bytes)  # half done: the directory exists
            raise Internal("disk said no")
        return real_create(directory, capacity_bytes)

    monkeypatch.setattr(pool, "create_volume", fail_once)

    with pytest.raises(Internal, match="disk said no"):
        prov.create_volume(request())
    assert handle.catalog.load_volumes() == []
    assert volume_dirs(pool) == []
    assert prov.index.by_name("pvc-1") is None

    record = prov.create_volume(request())
    assert record.state == "ready"
    assert volume_dirs(pool) == [record.directory]


def test_a_crash_after_the_reservation_is_finished_by_a_retry_after_restart(
    pool: PlainPool, handle: PoolHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool, "create_volume", crash)
    with pytest.raises(Crash):
        provisioner_of(handle).create_volume(request())
    [reserved] = handle.catalog.load_volumes()
    assert reserved.state == "creating"
    monkeypatch.undo()

    restarted = provisioner_of(handle_of(make_pool(pool.root)))
    record = restarted.create_volume(request())

    assert record.volume_id == reserved.volume_id
    assert record.state == "ready"
    assert volume_dirs(pool) == [record.directory]


# -- capacity budget ----------------------------------------------------------------------------


def test_a_volume_beyond_the_budget_is_resource_exhausted_and_leaves_nothing(
    pool: PlainPool,
) -> None:
    total = pool.space().total_bytes
    handle = handle_of(pool, overcommit=2.5 * MiB / total)  # a budget of ~2.5 MiB
    prov = provisioner_of(handle)
    prov.create_volume(request("a", required=MiB))
    prov.create_volume(request("b", required=MiB))

    with pytest.raises(ResourceExhausted, match=r"cannot fit 1Mi: .* left to provision"):
        prov.create_volume(request("c", required=MiB))

    assert len(volume_dirs(pool)) == 2
    assert len(handle.catalog.load_volumes()) == 2


def test_deleting_a_volume_gives_its_budget_back(pool: PlainPool) -> None:
    total = pool.space().total_bytes
    prov = provisioner_of(handle_of(pool, overcommit=2.5 * MiB / total))
    prov.create_volume(request("a", required=MiB))
    b = prov.create_volume(request("b", required=MiB))
    available = prov.available_bytes("plain")

    prov.delete_volume(b.volume_id)

    assert prov.available_bytes("plain") == available + MiB
    assert prov.create_volume(request("c", required=MiB)).state == "ready"


@pytest.mark.parametrize("policy", ["retain", "archive"])
def test_retained_and_archived_volumes_keep_their_budget(pool: PlainPool, policy: str) -> None:
    total = pool.space().total_bytes
    prov = provisioner_of(handle_of(pool, overcommit=2.5 * MiB / total))
    prov.create_volume(request("a", required=MiB))
    b = prov.create_volume(request("b", required=MiB, onDelete=policy))

    prov.delete_volume(b.volume_id)

    with pytest.raises(ResourceExhausted):
        prov.create_volume(request("c", required=MiB))


def test_overcommit_lets_volumes_exceed_the_filesystem(pool: PlainPool) -> None:
    big = pool.space().total_bytes * 3 // 2
    with pytest.raises(ResourceExhausted):
        provisioner_of(handle_of(pool)).create_volume(request(required=big))

    record = provisioner_of(handle_of(pool, overcommit=2.0)).create_volume(request(required=big))

    assert record.capacity_bytes >= big


def test_get_capacity_shrinks_by_what_was_provisioned(prov: Provisioner) -> None:
    before = prov.capacity({}, None)

    prov.create_volume(request(required=64 * MiB))

    assert prov.capacity({}, None) == before - 64 * MiB
    with pytest.raises(InvalidArgument, match="unknown pool"):
        prov.capacity({"pool": "nope"}, None)


# -- delete policies ----------------------------------------------------------------------------


def test_delete_removes_data_and_record_and_is_idempotent(
    prov: Provisioner, handle: PoolHandle, pool: PlainPool
) -> None:
    record = prov.create_volume(request())
    (pool.volume_path(record.directory) / "data").write_bytes(b"x" * 1000)

    prov.delete_volume(record.volume_id)
    prov.delete_volume(record.volume_id)

    assert volume_dirs(pool) == []
    assert handle.catalog.load_volumes() == []
    with pytest.raises(NotFound):
        prov.get(record.volume_id)


@pytest.mark.parametrize(
    "volume_id", ["", "nope", "plain/" + "0" * 32, "other/" + "0" * 32, "../../etc", "plain/../x"]
)
def test_delete_of_unknown_or_foreign_ids_is_ok_and_touches_nothing(
    prov: Provisioner, pool: PlainPool, volume_id: str
) -> None:
    record = prov.create_volume(request())

    prov.delete_volume(volume_id)

    assert volume_dirs(pool) == [record.directory]


def test_delete_with_an_id_over_128_bytes_is_invalid_argument(prov: Provisioner) -> None:
    with pytest.raises(InvalidArgument, match="longer than 128 bytes"):
        prov.delete_volume("plain/" + "a" * 200)


def test_delete_of_a_mounted_volume_is_failed_precondition_and_keeps_it(
    handle: PoolHandle, pool: PlainPool
) -> None:
    prov = provisioner_of(handle, mounts_of=lambda _record: ["/mnt/b", "/mnt/a"])
    record = prov.create_volume(request())

    with pytest.raises(FailedPrecondition, match="mounted at /mnt/a, /mnt/b"):
        prov.delete_volume(record.volume_id)

    assert prov.get(record.volume_id).state == "ready"
    assert handle.catalog.read_volume(record.uuid) == record
    assert volume_dirs(pool) == [record.directory]


def test_delete_retain_keeps_data_in_place_and_records_it(
    prov: Provisioner, handle: PoolHandle, pool: PlainPool
) -> None:
    record = prov.create_volume(request(onDelete="retain"))
    (pool.volume_path(record.directory) / "data").write_bytes(b"keep me")

    prov.delete_volume(record.volume_id)

    retained = handle.catalog.read_volume(record.uuid)
    assert retained is not None and retained.state == "retained"
    assert retained.deleted_at is not None
    assert (pool.volume_path(record.directory) / "data").read_bytes() == b"keep me"
    with pytest.raises(NotFound):
        prov.get(record.volume_id)
    prov.delete_volume(record.volume_id)  # again: OK, still retained
    assert handle.catalog.read_volume(record.uuid) == retained


def test_delete_archive_moves_data_to_the_archive_and_records_where(
    prov: Provisioner, handle: PoolHandle, pool: PlainPool
) -> None:
    record = prov.create_volume(request(onDelete="archive"))
    (pool.volume_path(record.directory) / "data").write_bytes(b"keep me")

    prov.delete_volume(record.volume_id)

    archived = handle.catalog.read_volume(record.uuid)
    assert archived is not None and archived.state == "archived"
    assert archived.archive_name is not None
    assert archived.archive_name.startswith(f"{record.directory}-")
    assert (pool.root / "archive" / archived.archive_name / "data").read_bytes() == b"keep me"
    assert volume_dirs(pool) == []


def test_two_volumes_of_one_directory_archived_in_one_second_keep_separate_archives(
    prov: Provisioner, pool: PlainPool
) -> None:
    """A subDir template can give a later volume the directory of an archived one; both archives
    must stay apart (gc of one must never purge the other's data)."""
    for index in range(2):
        record = prov.create_volume(request(f"pvc-{index}", subDir="shared", onDelete="archive"))
        (pool.volume_path(record.directory) / "data").write_bytes(f"volume {index}".encode())
        prov.delete_volume(record.volume_id)

    archives = sorted((pool.root / "archive").iterdir())
    assert len(archives) == 2
    assert sorted((a / "data").read_bytes() for a in archives) == [b"volume 0", b"volume 1"]


def test_a_long_directory_still_archives(prov: Provisioner, pool: PlainPool) -> None:
    record = prov.create_volume(request(subDir="d" * 128, onDelete="archive"))
    prov.delete_volume(record.volume_id)
    [archive] = (pool.root / "archive").iterdir()
    assert len(archive.name) <= 128


def test_the_name_of_a_retained_volume_can_be_used_again(prov: Provisioner) -> None:
    old = prov.create_volume(request(onDelete="retain"))
    prov.delete_volume(old.volume_id)

    new = prov.create_volume(request(onDelete="retain"))

    assert new.volume_id != old.volume_id
    assert prov.get_by_name("pvc-1") == new


def test_a_crash_after_the_archive_move_is_finished_by_a_retry(
    prov: Provisioner, handle: PoolHandle, pool: PlainPool
) -> None:
    record = prov.create_volume(request(onDelete="archive"))
    # What an attempt that crashed at 2020-01-02 03:04:05 left: the record marked deleting with
    # its archive name, and the data renamed into the archive, but not yet relabelled `archived`.
    moved = pool.root / "archive" / f"{record.directory}-20200102T030405Z"
    handle.catalog.put_volume(
        record.model_copy(update={"state": "deleting", "archive_name": moved.name})
    )
    os.rename(pool.volume_path(record.directory), moved)

    provisioner_of(handle_of(make_pool(pool.root))).delete_volume(record.volume_id)

    archived = handle.catalog.read_volume(record.uuid)
    assert archived is not None and archived.state == "archived"
    assert archived.archive_name == moved.name
    assert os.listdir(pool.root / "archive") == [moved.name]


# -- listing ------------------------------------------------------------------------------------


def test_list_page_pages_through_ready_volumes_in_id_order_once(prov: Provisioner) -> None:
    ids = sorted(prov.create_volume(request(f"pvc-{n}")).volume_id for n in range(5))
    retained = prov.create_volume(request("gone", onDelete="retain"))
    prov.delete_volume(retained.volume_id)

    seen: list[str] = []
    token = ""
    for _ in range(10):
        page = prov.list_page(token, 2)
        assert len(page.records) <= 2
        seen += [r.volume_id for r in page.records]
        token = page.next_token
        if not token:
            break

    assert seen == ids


def test_list_page_without_a_maximum_returns_everything_and_no_token(prov: Provisioner) -> None:
    for n in range(3):
        prov.create_volume(request(f"pvc-{n}"))

    page = prov.list_page("", 0)

    assert len(page.records) == 3
    assert page.next_token == ""


def test_list_page_token_survives_deletion_of_the_volume_it_names(prov: Provisioner) -> None:
    ids = sorted(prov.create_volume(request(f"pvc-{n}")).volume_id for n in range(3))
    first = prov.list_page("", 1)
    prov.delete_volume(first.next_token)

    rest = prov.list_page(first.next_token, 0)

    assert [r.volume_id for r in rest.records] == ids[1:]


@pytest.mark.parametrize("token", ["garbage", "../x", "plain/" + "Z" * 32, "plain/"])
def test_list_page_with_an_invalid_token_is_aborted(prov: Provisioner, token: str) -> None:
    with pytest.raises(Aborted, match="invalid starting_token"):
        prov.list_page(token, 0)


def test_list_page_with_negative_max_entries_is_invalid_argument(prov: Provisioner) -> None:
    with pytest.raises(InvalidArgument, match="max_entries"):
        prov.list_page("", -1)


# -- restart ------------------------------------------------------------------------------------


def test_a_new_provisioner_rebuilds_everything_from_the_pool(
    prov: Provisioner, pool: PlainPool
) -> None:
    ready = [prov.create_volume(request(f"pvc-{n}")) for n in range(3)]
    retained = prov.create_volume(request("kept", onDelete="retain", subDir="kept-dir"))
    prov.delete_volume(retained.volume_id)
    archived = prov.create_volume(request("moved", onDelete="archive"))
    prov.delete_volume(archived.volume_id)
    available = prov.available_bytes("plain")

    restarted = provisioner_of(handle_of(make_pool(pool.root)))

    assert restarted.index.records() == prov.index.records()
    assert restarted.available_bytes("plain") == available
    assert restarted.list_page("", 0).records == sorted(ready, key=lambda r: r.volume_id)
    assert restarted.create_volume(request("pvc-1")) == ready[1]
    assert restarted.get_by_name("pvc-2") == ready[2]
    with pytest.raises(AlreadyExists, match="kept-dir"):
        restarted.create_volume(request("new", subDir="kept-dir"))


# -- directory ownership ------------------------------------------------------------------------


def test_a_template_names_the_directory(prov: Provisioner, pool: PlainPool) -> None:
    record = prov.create_volume(templated("data"))

    assert record.directory == "team-a-data"
    assert volume_dirs(pool) == ["team-a-data"]


def test_two_volumes_rendering_the_same_directory_is_already_exists(
    prov: Provisioner, pool: PlainPool
) -> None:
    first = prov.create_volume(templated("data"))
    clash = CreateRequest(
        name="another-pv", capabilities=(RWX,), parameters=templated("data").parameters
    )

    with pytest.raises(AlreadyExists, match=f"already belongs to volume '{first.name}'"):
        prov.create_volume(clash)

    assert volume_dirs(pool) == ["team-a-data"]
    assert len(prov.index.records()) == 1


def test_a_foreign_directory_is_already_exists_and_left_alone(
    prov: Provisioner, handle: PoolHandle, pool: PlainPool
) -> None:
    foreign = pool.root / "volumes" / "team-a-data"
    foreign.mkdir()
    (foreign / "theirs").write_bytes(b"not ours")

    with pytest.raises(AlreadyExists, match="belongs to no volume"):
        prov.create_volume(templated("data"))

    assert (foreign / "theirs").read_bytes() == b"not ours"
    assert handle.catalog.load_volumes() == []


def test_a_retained_volume_keeps_its_directory(prov: Provisioner) -> None:
    old = prov.create_volume(templated("data", onDelete="retain"))
    prov.delete_volume(old.volume_id)

    with pytest.raises(AlreadyExists, match=r"\(retained\)"):
        prov.create_volume(templated("data", onDelete="retain"))


@pytest.mark.parametrize("policy", ["delete", "archive"])
def test_a_deleted_or_archived_volume_frees_its_directory(prov: Provisioner, policy: str) -> None:
    old = prov.create_volume(templated("data", onDelete=policy))
    prov.delete_volume(old.volume_id)

    new = prov.create_volume(templated("data", onDelete=policy))

    assert new.directory == "team-a-data"
    assert new.volume_id != old.volume_id


# -- locating volumes by ID (the node side) -----------------------------------------------------


def test_the_locator_finds_ready_volumes_and_nothing_else(
    prov: Provisioner, handle: PoolHandle, pool: PlainPool
) -> None:
    locator = VolumeLocator({"plain": handle})
    record = prov.create_volume(request())
    retained = prov.create_volume(request("kept", onDelete="retain"))
    prov.delete_volume(retained.volume_id)

    located = locator.locate(record.volume_id)

    assert located.record == record
    assert located.path == pool.volume_path(record.directory)
    for volume_id in (retained.volume_id, "plain/" + "0" * 32, "nope/" + record.uuid,
                      f"plain/{record.uuid}/..", "../../etc"):  # fmt: skip
        with pytest.raises(NotFound):
            locator.locate(volume_id)
    with pytest.raises(InvalidArgument):
        locator.locate("plain/" + "a" * 200)


def test_delete_while_a_create_retry_resumes_the_volume_is_aborted(prov: Provisioner) -> None:
    """CreateVolume (locked by name) and DeleteVolume (locked by ID) of one volume never run
    together in the service: the second is ABORTED and retried by the CO."""
    record = prov.create_volume(request())
    with prov.guard.hold(record.volume_id), pytest.raises(Aborted):
        prov.delete_volume(record.volume_id)
    prov.delete_volume(record.volume_id)
    assert prov.index.get(record.volume_id) is None


def test_delete_marks_the_record_only_under_the_pool_lock(
    prov: Provisioner, handle: PoolHandle, pool: PlainPool
) -> None:
    """`sharevol doctor --fix` (another process) re-adds a lost export under the pool lock after
    checking the record is ready: a delete must not mark it `deleting` meanwhile."""
    import threading

    from sharevol.catalog.store import Catalog

    record = prov.create_volume(request())
    doctor = Catalog(pool.root)  # its own lock file description, as another process has
    with doctor.pool_lock():
        deleting = threading.Thread(target=prov.delete_volume, args=(record.volume_id,))
        deleting.start()
        deleting.join(timeout=0.5)
        assert deleting.is_alive()
        current = handle.catalog.read_volume(record.uuid)
        assert current is not None and current.state == "ready"
    deleting.join(timeout=10)
    assert not deleting.is_alive()
    assert handle.catalog.read_volume(record.uuid) is None
