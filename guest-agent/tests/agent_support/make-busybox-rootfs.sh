#!/bin/sh
# Builds a minimal container root filesystem from the static busybox: DEST/bin/busybox plus a
# link per applet, and the empty directories a container's mounts need.
# usage: make-busybox-rootfs.sh DEST
set -eu
dest=${1:?usage: $0 DEST}
busybox=${BUSYBOX:-/bin/busybox}
if [ ! -x "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
    echo "make-busybox-rootfs: $busybox is missing or not static (apt-get install busybox-static)" >&2
    exit 1
fi
mkdir -p "$dest/bin" "$dest/proc" "$dest/sys" "$dest/dev" "$dest/tmp" "$dest/etc" "$dest/root"
cp "$busybox" "$dest/bin/busybox"
for applet in $("$busybox" --list); do
    [ -e "$dest/bin/$applet" ] || ln -s busybox "$dest/bin/$applet"
done
echo "root:x:0:0:root:/root:/bin/sh" >"$dest/etc/passwd"
echo "root:x:0:" >"$dest/etc/group"
