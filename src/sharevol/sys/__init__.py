"""The I/O boundary: processes, mounts, ioctls, statvfs. Nothing above talks to the OS directly."""
