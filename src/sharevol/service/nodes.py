"""Node IDs of the form `name@address`: how the controller learns a node's NFS client address.

ControllerPublishVolume carries only the node ID (no topology, no address), so the node says
its address in the ID it reports from NodeGetInfo: run the node plugin with
`--node-id "$(NODE_NAME)@$(NODE_IP)"` (the Kubernetes downward API gives both). Nothing has to
be kept in step on the controller (no address map to edit when nodes come and go), and the
CO stores and passes the ID verbatim. The name part alone goes into topology labels, whose
values may not contain `@`.
"""

from __future__ import annotations

import ipaddress

from sharevol.errors import NotFound

SEPARATOR = "@"


def node_name(node_id: str) -> str:
    """The node's name: the ID up to the last `@`, or the whole ID."""
    name, separator, _address = node_id.rpartition(SEPARATOR)
    return name if separator and name else node_id


def node_address(node_id: str) -> str | None:
    """The IP address after the last `@`, normalised; None when the ID carries none."""
    name, separator, address = node_id.rpartition(SEPARATOR)
    if not separator or not name:
        return None
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.scope_id:
        return None  # "fe80::1%eth0": a zone means nothing to the server; Ganesha refuses "%"
    return str(parsed)


def require_address(node_id: str) -> str:
    """The node's address, or NotFound saying how to give one (CSI: unknown node)."""
    address = node_address(node_id)
    if address is None:
        raise NotFound(
            f"node {node_id[:128]!r} has no NFS client address: run its node plugin with "
            '--node-id "NAME@IP" (for example "$(NODE_NAME)@$(NODE_IP)")'
        )
    return address
