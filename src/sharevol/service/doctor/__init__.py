"""`sharevol doctor`: small checks of each pool, its catalog against its data, and the NFS
exports, with safe repairs. Importing the check modules registers them (model.CHECKS), in the
order of the report: the pool itself, then its volumes, snapshots and exports."""

# isort: off
from sharevol.service.doctor import pool_checks  # noqa: F401
from sharevol.service.doctor import volume_checks  # noqa: F401
from sharevol.service.doctor import btrfs_checks  # noqa: F401
from sharevol.service.doctor import project_checks  # noqa: F401
from sharevol.service.doctor import snapshot_checks  # noqa: F401
from sharevol.service.doctor import export_checks  # noqa: F401
from sharevol.service.doctor import live_exports  # noqa: F401

# isort: on
from sharevol.service.doctor.model import CHECKS, Finding, Fix
from sharevol.service.doctor.runner import STUCK_AFTER, DoctorReport, ReportLine, run_doctor

__all__ = ["CHECKS", "STUCK_AFTER", "DoctorReport", "Finding", "Fix", "ReportLine", "run_doctor"]
