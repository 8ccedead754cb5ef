#!/bin/sh
# virtio-blk under the jailed VMM (the default as root): a guest with two disks, /dev/vda an
# erofs image built here (read-only) and /dev/vdb a raw file (read-write). The guest mounts
# vda and reads a known file, sees vda read-only with its GET_ID serial, fails to write it,
# writes and syncs a block to vdb; after condo exits 0 the host finds that block in the file.
. "$(dirname "$0")/lib.sh"

require_kvm
[ "$(id -u)" = 0 ] || skip "the jailed VMM needs root"
condo_can_boot || skip "condo cannot boot a guest yet ($CONDO_BIN_DIR/condo)"
command -v mkfs.erofs >/dev/null 2>&1 || fail "no mkfs.erofs (erofs-utils; listed in tests/real-guest/host-tools)"
grep -q '^CONFIG_VIRTIO_BLK=y' "$CONDO_KERNEL_DIR/config" || fail "guest kernel lacks CONFIG_VIRTIO_BLK"
grep -q '^CONFIG_EROFS_FS=y' "$CONDO_KERNEL_DIR/config" || fail "guest kernel lacks CONFIG_EROFS_FS"

T=$CONDO_TEST_TMP
MARKER="condo-blk-$$"
SECRET="known content $$ $(date +%s)"
DATA="written by the guest $$"

mkdir -p "$T/rootdir/sub"
printf '%s\n' "$SECRET" >"$T/rootdir/sub/known.txt"
mkfs.erofs --quiet --all-root "$T/ro.img" "$T/rootdir" >"$T/mkfs.log" 2>&1 || { cat "$T/mkfs.log"; fail "mkfs.erofs failed"; }
chmod 0644 "$T/ro.img"
ro_sum=$(md5sum <"$T/ro.img")
dd if=/dev/zero of="$T/rw.img" bs=1024 count=4096 2>/dev/null || fail "cannot make the rw disk"

cat >"$T/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
say() { echo "$MARKER \$*"; }
say "vda ro=\$(cat /sys/block/vda/ro) size=\$(cat /sys/block/vda/size) serial=\$(cat /sys/block/vda/serial)"
say "vdb ro=\$(cat /sys/block/vdb/ro) size=\$(cat /sys/block/vdb/size)"
mkdir -p /ro
if mount -t erofs -o ro /dev/vda /ro; then say "read \$(cat /ro/sub/known.txt)"; else say "mount failed"; fi
umount /ro
printf '%s' "$DATA" >/tmp/block
dd if=/tmp/block of=/dev/vdb bs=512 count=1 seek=8 conv=sync,fsync 2>/dev/null
say "rw-write rc=\$?"
dd if=/tmp/block of=/dev/vda bs=512 count=1 conv=sync,fsync 2>/dev/null
say "ro-write rc=\$?"
# Read back what is on the rw disk through the device, bypassing the page cache.
echo 3 >/proc/sys/vm/drop_caches
say "rw-read \$(dd if=/dev/vdb bs=512 skip=8 count=1 2>/dev/null | tr -d '\\000')"
/bin/busybox reboot -f
INIT
make_initramfs "$T/initrd.cpio.gz" "$T/init"

log="$T/console.log"
timeout -s KILL 180 "$CONDO_BIN_DIR/condo" vm run --kernel "$CONDO_KERNEL_DIR/vmlinux" \
    --initrd "$T/initrd.cpio.gz" --memory 256 \
    --cmdline "console=ttyS0 reboot=k panic=-1 quiet" --console "$log" \
    --disk "$T/ro.img,ro" --disk "$T/rw.img" --jail-base "$T/jail" \
    </dev/null >"$T/condo.out" 2>&1
rc=$?
out=$(tr -d '\r' <"$log" | grep -o "$MARKER .*")
if [ "$rc" -ne 0 ] || [ -z "$out" ]; then
    note "guest console:"; tail -n 40 "$log"
    note "condo output:"; cat "$T/condo.out"
    fail "condo exited $rc"
fi
note "guest said:"; echo "$out"
expect() { echo "$out" | grep -qF "$MARKER $1" || fail "guest did not say '$1'"; }
ro_sectors=$(($(wc -c <"$T/ro.img") / 512))
expect "vda ro=1 size=$ro_sectors serial=ro.img"
expect "vdb ro=0 size=8192"
expect "read $SECRET"
expect "rw-write rc=0"
expect "rw-read $DATA"
echo "$out" | grep -q "$MARKER ro-write rc=0" && fail "writing the read-only disk succeeded"
expect "ro-write rc="
# The host sees the guest's block at sector 8 of the rw file; the ro image is untouched.
host=$(dd if="$T/rw.img" bs=512 skip=8 count=1 2>/dev/null | tr -d '\000')
[ "$host" = "$DATA" ] || fail "host reads '$host' at sector 8 of rw.img, want '$DATA'"
[ "$(md5sum <"$T/ro.img")" = "$ro_sum" ] || fail "the read-only image changed"
[ -f "$T/jail/uids" ] || fail "no jail was made in $T/jail (condo ran unjailed?)"
[ -z "$(ls -d "$T/jail"/vm-* 2>/dev/null)" ] || fail "jail left behind: $(ls "$T/jail")"
pass "ro erofs read ($ro_sectors sectors, serial ro.img), ro write refused, rw write+fsync seen by the host, jailed"
