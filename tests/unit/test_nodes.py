"""Node IDs `name@address`: the NFS client address for ControllerPublish, the name for topology."""

from __future__ import annotations

import pytest

from sharevol.errors import NotFound
from sharevol.service.nodes import node_address, node_name, require_address


@pytest.mark.parametrize(
    ("node_id", "name", "address"),
    [
        ("worker-1@10.0.0.5", "worker-1", "10.0.0.5"),
        ("worker-1@fd00::0005", "worker-1", "fd00::5"),
        ("odd@name@10.0.0.5", "odd@name", "10.0.0.5"),
        ("worker-1", "worker-1", None),
        ("worker-1@", "worker-1@", None),
        ("@10.0.0.5", "@10.0.0.5", None),
        ("worker-1@not-an-ip", "worker-1", None),
    ],
)
def test_node_id_splits_into_name_and_address(
    node_id: str, name: str, address: str | None
) -> None:
    assert node_address(node_id) == address
    if address is not None:
        assert node_name(node_id) == name


def test_a_node_id_without_address_keeps_its_whole_name() -> None:
    assert node_name("worker-1") == "worker-1"


def test_missing_address_is_not_found_saying_how_to_set_it() -> None:
    with pytest.raises(NotFound, match=r'--node-id "NAME@IP"'):
        require_address("worker-1")
