#!/bin/sh
# /init of the VM test tier's initramfs (static busybox; see docs/vm-tier.md).
# Mounts the host's / (virtiofs, read-only) under a throw-away overlay, binds the job dir
# read-write over it, runs the job chrooted there, then powers off (qemu runs with -no-reboot).
# Its hash is part of the initramfs cache key: any edit here rebuilds the initramfs.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev

say() { echo "sharevol-vm: [uptime $(cut -d' ' -f1 /proc/uptime) s] $*" >/dev/console; }
die() {
    say "FAILED: $*"
    sync
    reboot -f
}
arg() {
    for word in $(cat /proc/cmdline); do
        case "$word" in "$1="*) echo "${word#*=}" ;; esac
    done
}

NAME=$(arg sharevol_name)
JOB=$(arg sharevol_job)
[ -n "$JOB" ] || die "no sharevol_job= on the kernel command line"
JOBDIR=${JOB%/*}

# Core modules now; the filesystem ones in the background while Python starts (about 2 s of
# TCG time saved). Anything else in the initramfs loads on demand: the kernel runs /sbin/modprobe
# (busybox) in this root, not in the chroot.
for module in virtio_pci virtio_net virtio_blk virtiofs overlay loop; do
    modprobe "$module" || die "modprobe $module"
done
(for module in xfs quota_v2 nfsv4; do modprobe "$module"; done) &

ip link set lo up
hostname "${NAME:-sharevol-vm}" # unique per VM: it is the NFSv4 client identity
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 \
    || die "network setup"

mkdir -p /lower /upper /newroot
mount -t virtiofs hostroot /lower || die "mount virtiofs"
mount -t tmpfs -o size=1g tmpfs /upper || die "mount tmpfs"
mkdir -p /upper/u /upper/w
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w /newroot \
    || die "mount overlay"
for dir in proc sys dev; do mount --rbind "/$dir" "/newroot/$dir" || die "bind /$dir"; done
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /newroot/dev/pts || die "mount devpts"
mount -t tmpfs tmpfs /newroot/dev/shm || die "mount /dev/shm"
mount -t tmpfs tmpfs /newroot/run || die "mount /run"
# The job dir bypasses the overlay so that rc and junit.xml reach the host.
mount --bind "/lower$JOBDIR" "/newroot$JOBDIR" || die "bind job dir $JOBDIR"

say "running $JOB"
chroot /newroot /bin/sh -c "cd '$JOBDIR' && exec /bin/sh '$JOB'"
say "job finished"
wait
sync
umount "/newroot$JOBDIR"
umount /lower 2>/dev/null
reboot -f
