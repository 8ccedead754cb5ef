#!/bin/sh
# condo's VMM boots the guest kernel: vmlinux (PVH entry) with 1 and with 2 vCPUs, and the
# bzImage (64-bit boot protocol), each to a busybox init that prints a marker with the CPU
# count it sees and leaves through the i8042 reset (reboot=k). `condo vm run` must exit 0.
. "$(dirname "$0")/lib.sh"

require_kvm
[ -x "$CONDO_BIN_DIR/condo" ] || fail "no condo binary in CONDO_BIN_DIR=$CONDO_BIN_DIR"
for f in vmlinux bzImage; do
    [ -f "$CONDO_KERNEL_DIR/$f" ] || fail "no $f in CONDO_KERNEL_DIR=$CONDO_KERNEL_DIR"
done

MARKER="condo-vmm-boot-$$"
cat >"$CONDO_TEST_TMP/init" <<INIT
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
echo "$MARKER cpus=\$(/bin/busybox grep -c ^processor /proc/cpuinfo) online=\$(/bin/busybox cat /sys/devices/system/cpu/online) uptime=\$(/bin/busybox cut -d' ' -f1 /proc/uptime)"
/bin/busybox reboot -f
INIT
make_initramfs "$CONDO_TEST_TMP/initrd.cpio.gz" "$CONDO_TEST_TMP/init"

# boot IMAGE VCPUS: boots, checks exit code, marker and CPU count; records the time taken.
boot() {
    image=$1 vcpus=$2
    log="$CONDO_TEST_TMP/console-$image-$vcpus.log"
    start=$(uptime_seconds)
    timeout -s KILL 120 "$CONDO_BIN_DIR/condo" vm run --kernel "$CONDO_KERNEL_DIR/$image" \
        --initrd "$CONDO_TEST_TMP/initrd.cpio.gz" --vcpus "$vcpus" --memory 256 \
        --cmdline "console=ttyS0 reboot=k panic=-1 quiet" --console "$log" \
        </dev/null >"$log.vmm" 2>&1
    rc=$?
    took=$(awk -v s="$start" -v e="$(uptime_seconds)" 'BEGIN { printf "%.2f", e - s }')
    line=$(tr -d '\r' <"$log" | grep -o "$MARKER .*" | head -n1)
    if [ -z "$line" ]; then
        note "$image, $vcpus vCPU(s): guest console:"; tail -n 30 "$log"
        note "condo output:"; cat "$log.vmm"
        fail "$image with $vcpus vCPU(s): no marker (condo exited $rc after ${took}s)"
    fi
    [ "$rc" -eq 0 ] || { cat "$log.vmm"; fail "$image with $vcpus vCPU(s): condo exited $rc after the marker, want 0"; }
    cpus=$(echo "$line" | sed -n 's/.* cpus=\([0-9]*\).*/\1/p')
    [ "$cpus" = "$vcpus" ] || fail "$image: guest saw $cpus CPUs, want $vcpus ($line)"
    expected_online=0
    [ "$vcpus" -gt 1 ] && expected_online="0-$((vcpus - 1))"
    echo "$line" | grep -q " online=$expected_online " || fail "$image: online CPUs not $expected_online ($line)"
    guest_up=$(echo "$line" | sed -n 's/.* uptime=\([0-9.]*\).*/\1/p')
    note "$image, $vcpus vCPU(s): exit 0, cpus=$cpus, init at guest uptime ${guest_up}s, exec to exit ${took}s"
    RESULTS="$RESULTS $image/${vcpus}cpu=${took}s"
}

RESULTS=
boot vmlinux 1
boot vmlinux 2
boot bzImage 2
pass "$RESULTS"
