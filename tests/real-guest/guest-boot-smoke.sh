#!/bin/sh
# The chain works: condo's guest kernel boots on a real /dev/kvm to a tiny init that prints a
# marker with its CPU count and leaves through the i8042 reset (reboot=k).
. "$(dirname "$0")/lib.sh"

require_kvm
for f in vmlinux bzImage; do
    [ -f "$CONDO_KERNEL_DIR/$f" ] || fail "no $f in CONDO_KERNEL_DIR=$CONDO_KERNEL_DIR"
done

VCPUS=2
MARKER="condo-smoke-$$-$(uptime_seconds)"
cat >"$CONDO_TEST_TMP/smoke-init" <<EOF
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo "$MARKER cpus=\$(/bin/busybox grep -c ^processor /proc/cpuinfo) uptime=\$(/bin/busybox cut -d' ' -f1 /proc/uptime)"
/bin/busybox reboot -f
EOF
make_initramfs "$CONDO_TEST_TMP/smoke.cpio.gz" "$CONDO_TEST_TMP/smoke-init"

LOG="$CONDO_TEST_TMP/smoke-console.log"
start=$(uptime_seconds)
boot_guest "$LOG" 120 "$CONDO_TEST_TMP/smoke.cpio.gz" \
    "console=ttyS0 reboot=k panic=-1 quiet" "$VCPUS" 128
rc=$?
end=$(uptime_seconds)
took=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }')

line=$(tr -d '\r' <"$LOG" | grep -o "$MARKER .*" | head -n1)
if [ -z "$line" ]; then
    note "guest console:"; tail -n 30 "$LOG"
    note "VMM output:"; tail -n 30 "$LOG.vmm"
    [ "$rc" -eq 124 ] && fail "$GUEST_VMM: no marker; guest did not finish within 120s"
    fail "$GUEST_VMM exited $rc without the guest's marker"
fi
[ "$rc" -eq 0 ] || { tail -n 30 "$LOG.vmm"; fail "$GUEST_VMM exited $rc after the marker (want 0: the guest's reset ends the VM cleanly)"; }
cpus=$(echo "$line" | sed -n 's/.* cpus=\([0-9]*\).*/\1/p')
[ "$cpus" = "$VCPUS" ] || fail "guest saw $cpus CPUs, want $VCPUS (MP-table discovery)"
guest_up=$(echo "$line" | sed -n 's/.* uptime=\([0-9.]*\).*/\1/p')
pass "$GUEST_VMM booted the guest with $cpus CPUs; init reached at guest uptime ${guest_up}s; VMM start to exit ${took}s"
