"""sharevol: Kubernetes persistent volumes out of shared file storage (a CSI driver)."""

__version__ = "0.1.0"
DRIVER_NAME = "sharevol.csi.io"
