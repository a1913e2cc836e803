"""`sharevol doctor`: small checks of each pool, its catalog against its data, and the NFS
exports, with safe repairs. Importing the check modules registers them (model.CHECKS)."""

from sharevol.service.doctor import (  # noqa: F401 - imported to register their checks
    btrfs_checks,
    export_checks,
    pool_checks,
    snapshot_checks,
    volume_checks,
)
from sharevol.service.doctor.model import CHECKS, Finding, Fix
from sharevol.service.doctor.runner import STUCK_AFTER, DoctorReport, ReportLine, run_doctor

__all__ = ["CHECKS", "STUCK_AFTER", "DoctorReport", "Finding", "Fix", "ReportLine", "run_doctor"]
