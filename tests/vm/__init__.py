"""The VM tier: project tests run in a throw-away qemu guest (docs/vm-tier.md)."""
