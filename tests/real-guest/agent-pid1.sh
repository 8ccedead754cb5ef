#!/usr/bin/env bash
# condo-agent as PID 1 of a real guest (condo's guest kernel): it mounts the basics, re-roots
# off the initramfs, serves the protocol, runs a container and reaps. A client started by /init
# just before it execs the agent talks to it over a Unix socket inside the guest
# (condo.unix=...) and prints markers on the console, which this script checks.
#
# Stand-in until condo's VMM has virtio-vsock and boots guests: QEMU microvm. With KVM that
# boots stock kernels it uses -accel kvm, else TCG (set CONDO_GUEST_ACCEL to force one).
# env: CONDO_BIN_DIR (static condo-agent), CONDO_KERNEL_DIR (bzImage), CONDO_TEST_TMP.
# exit: 0 PASS, 77 SKIP, other FAIL.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
[ -f "$here/lib.sh" ] && . "$here/lib.sh"

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }

agent=${CONDO_BIN_DIR:?CONDO_BIN_DIR not set}/condo-agent
kernel=${CONDO_KERNEL_DIR:?CONDO_KERNEL_DIR not set}/bzImage
tmp=${CONDO_TEST_TMP:?CONDO_TEST_TMP not set}/agent-pid1
[ -x "$agent" ] || fail "no condo-agent binary at $agent"
[ -f "$kernel" ] || fail "no guest kernel at $kernel"
command -v qemu-system-x86_64 >/dev/null || skip "no qemu-system-x86_64 to boot the guest (condo's VMM cannot boot one yet)"
command -v cpio >/dev/null || skip "no cpio to build the initramfs"
busybox=$(command -v busybox || true)
[ -n "$busybox" ] || skip "no busybox for the initramfs"

rm -rf "$tmp" && mkdir -p "$tmp/root/bin" "$tmp/root/dev" "$tmp/root/proc"
root=$tmp/root
cp "$busybox" "$root/bin/busybox"
cp "$agent" "$root/bin/condo-agent"
sh "$here/../../guest-agent/tests/fixtures/make-busybox-rootfs.sh" "$root/rootfs" >/dev/null
# A console for the kernel to hand to /init (the agent also opens it itself when missing).
mknod -m 600 "$root/dev/console" c 5 1
# busybox sh points a background job's stdin at /dev/null, before the agent has mounted /dev.
mknod -m 666 "$root/dev/null" c 1 3

nonce="$$-$RANDOM"
sock=/run/condo/agent.sock
# The client runs in the agent's root: PID 1 re-roots off the initramfs (a bind mount moved
# over /), so the client waits for the socket under /proc/1/root and chroots there.
cat >"$root/client.sh" <<CLIENT
export PATH=/bin
mark() { echo "@@AGENT-PID1 $nonce \$*@@"; }
ctl="/bin/condo-agent ctl --target unix:$sock"
\$ctl --wait 60 ping; mark "ping rc=\$?"
\$ctl boot-timings; mark "timings rc=\$?"
mark "pid1=\$(/bin/busybox cat /proc/1/comm)"
\$ctl run --rootfs /rootfs --id c1 -- sh -c 'echo "hello from \$(hostname) pid \$\$"; exit 7'
mark "run rc=\$?"
\$ctl run --rootfs /rootfs --id c2 -- sh -c 'seq 1 50000 | wc -l; echo to-stderr >&2'
mark "run2 rc=\$?"
# A memory limit (pure cgroup v2, controllers delegated by PID 1) OOM-kills the container.
\$ctl run --rootfs /rootfs --id c3 --memory 33554432 -- dd if=/dev/zero of=/dev/null bs=64M count=1
mark "oom rc=\$?"
\$ctl oom-events --timeout-ms 10000
# An orphan (its parent exits at once): PID 1 must reap it. Wait (bounded) for that.
/bin/busybox sh -c '/bin/busybox sleep 0 & exit 0'
i=0
while zombies=\$(/bin/busybox ps -o stat | /bin/busybox grep -c '^Z'); [ "\$zombies" != 0 ] && [ \$i -lt 100 ]; do
    i=\$((i + 1)); /bin/busybox usleep 50000
done
mark "zombies=\$zombies"
mark "done"
/bin/busybox reboot -f
CLIENT
cat >"$root/init" <<INIT
#!/bin/busybox sh
(
    /bin/busybox mount -t proc proc /proc
    i=0
    while [ ! -S /proc/1/root$sock ] && [ \$i -lt 1200 ]; do
        i=\$((i + 1)); /bin/busybox usleep 50000
    done
    exec /bin/busybox chroot /proc/1/root /bin/busybox sh /client.sh
) &
exec /bin/condo-agent
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet) >"$tmp/initramfs.cpio"

accel=${CONDO_GUEST_ACCEL:-}
if [ -z "$accel" ]; then
    # PVM hosts have /dev/kvm but cannot boot stock kernels: only trust KVM where the CPU
    # advertises hardware virtualization.
    if [ -w /dev/kvm ] && grep -qE '\b(vmx|svm)\b' /proc/cpuinfo; then accel=kvm; else accel=tcg; fi
fi
cpu=max
[ "$accel" = kvm ] && cpu=host,-arch-capabilities
echo "booting the guest (accel $accel)"
set +e
timeout -k 5 180 qemu-system-x86_64 -M microvm -accel "$accel" -cpu "$cpu" -m 256 -smp 2 \
    -nodefaults -no-user-config -display none -no-reboot -device i8042 \
    -chardev "file,id=con,path=$tmp/console.log" -serial chardev:con \
    -kernel "$kernel" -initrd "$tmp/initramfs.cpio" \
    -append "console=ttyS0 reboot=k panic=-1 quiet condo.unix=$sock condo.hostname=pid1-guest" \
    </dev/null 2>"$tmp/qemu.err"
qemu_rc=$?
set -e
console=$(tr -d '\r' <"$tmp/console.log")
printf '%s\n' "$console" | sed 's/^/  guest| /'
[ "$qemu_rc" -eq 124 ] && fail "the guest did not finish within 180 s"
marker() { printf '%s\n' "$console" | sed -n "s/.*@@AGENT-PID1 $nonce \(.*\)@@.*/\1/p"; }
markers=$(marker)
expect() {
    printf '%s\n' "$markers" | grep -qx "$1" || fail "expected marker '$1' (qemu exit $qemu_rc)"
}
expect "ping rc=0"
expect "timings rc=0"
expect "pid1=condo-agent"
expect "run rc=7"
expect "run2 rc=0"
expect "oom rc=137"
expect "zombies=0"
expect "done"
printf '%s\n' "$console" | grep -q "hello from condo pid 1" ||
    fail "the container's output (its hostname, PID 1 in its namespace) did not reach the console"
printf '%s\n' "$console" | grep -qx "50000" || fail "the second container's stdout did not arrive"
printf '%s\n' "$console" | grep -qx "to-stderr" || fail "the second container's stderr did not arrive"
printf '%s\n' "$console" | grep -q "killed for lack of memory (OOM)" ||
    fail "the OOM kill was not reported"
printf '%s\n' "$console" | grep -q "^oom-event seq=1 container=c3$" ||
    fail "no OOM event for container c3"
printf '%s\n' "$console" | grep -q "condo-agent: ready on unix socket $sock" ||
    fail "the agent did not report ready"
echo "PASS: agent as PID 1 served ping, boot timings and containers (exit code, stdout, stderr, OOM kill under a memory limit); no zombies"
