"""The managed NFS server: NFS-Ganesha supervised with a private dbus-daemon, and one export per
volume added, changed and removed at runtime over DBus (DESIGN.md, topology 2)."""
