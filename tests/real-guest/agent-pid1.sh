#!/bin/sh
# condo-agent as PID 1 of a real guest (condo's guest kernel): it mounts the basics and a pure
# cgroup v2 hierarchy, re-roots off the initramfs, serves the protocol, runs containers (exit
# code, stdout, stderr, an OOM kill under a memory limit and its event) and reaps orphans.
# Until condo's VMM has virtio-vsock, a client started by /init just before it execs the agent
# talks to it over a Unix socket inside the guest (condo.unix=...) and prints markers on the
# console, which this script checks.
. "$(dirname "$0")/lib.sh"

require_kvm
agent=$CONDO_BIN_DIR/condo-agent
[ -x "$agent" ] || fail "no static condo-agent at $agent"
[ -f "$CONDO_KERNEL_DIR/bzImage" ] || fail "no bzImage in CONDO_KERNEL_DIR=$CONDO_KERNEL_DIR"

# The containers' root filesystem: busybox and a link per applet.
busybox=$(static_busybox)
rootfs=$CONDO_TEST_TMP/rootfs
mkdir -p "$rootfs/bin" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/etc" "$rootfs/tmp"
cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
    [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
done
echo "root:x:0:0:root:/root:/bin/sh" >"$rootfs/etc/passwd"
echo "root:x:0:" >"$rootfs/etc/group"

nonce="agent-pid1-$$-$(uptime_seconds)"
sock=/run/condo/agent.sock
# The client runs in the agent's root: PID 1 re-roots off the initramfs (a bind mount moved
# over /), so the client waits for the socket under /proc/1/root and chroots there.
cat >"$CONDO_TEST_TMP/client.sh" <<CLIENT
export PATH=/bin
mark() { echo "@@\$*@@ $nonce"; }
ctl="/bin/condo-agent ctl --target unix:$sock"
\$ctl --wait 60 ping; mark "ping rc=\$?"
\$ctl boot-timings; mark "timings rc=\$?"
mark "pid1=\$(/bin/busybox cat /proc/1/comm)"
mark "pid1-rss=\$(/bin/busybox grep VmRSS /proc/1/status | /bin/busybox tr -s ' \t' ' ')"
\$ctl run --rootfs /rootfs --id c1 -- sh -c 'echo "hello from \$(hostname) pid \$\$"; exit 7'
mark "run rc=\$?"
\$ctl run --rootfs /rootfs --id c2 -- sh -c 'seq 1 50000 | wc -l; echo to-stderr >&2'
mark "run2 rc=\$?"
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
cat >"$CONDO_TEST_TMP/init" <<INIT
#!/bin/busybox sh
# busybox sh points a background job's stdin at /dev/null, before the agent has mounted /dev.
/bin/busybox mknod -m 666 /dev/null c 1 3
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
make_initramfs "$CONDO_TEST_TMP/agent.cpio.gz" "$CONDO_TEST_TMP/init" \
    "$agent:/bin/condo-agent" "$CONDO_TEST_TMP/client.sh:/client.sh" "$rootfs:/rootfs"

log=$CONDO_TEST_TMP/console.log
boot_guest "$log" 300 "$CONDO_TEST_TMP/agent.cpio.gz" \
    "console=ttyS0 reboot=k panic=-1 quiet condo.unix=$sock" 2 256
rc=$?
console=$(tr -d '\r' <"$log")
markers=$(printf '%s\n' "$console" | sed -n "s/^@@\(.*\)@@ $nonce\$/\1/p")
check() {
    printf '%s\n' "$markers" | grep -qx "$1" && return 0
    note "guest console:"; printf '%s\n' "$console" | tail -n 40
    [ "$rc" -eq 124 ] && fail "$GUEST_VMM: the guest did not finish within 300s (no '$1')"
    fail "expected marker '$1' ($GUEST_VMM exit $rc)"
}
check "ping rc=0"
check "timings rc=0"
check "pid1=condo-agent"
check "run rc=7"
check "run2 rc=0"
check "oom rc=137"
check "zombies=0"
check "done"
expect_line() {
    printf '%s\n' "$console" | grep -q "$1" || fail "$2"
}
expect_line "condo-agent: ready on unix socket $sock" "the agent did not report ready"
expect_line "^hello from condo pid 1\$" "the container's output (hostname, PID 1 in its namespace) is missing"
expect_line "^50000\$" "the second container's stdout is missing"
expect_line "^to-stderr\$" "the second container's stderr is missing"
expect_line "killed for lack of memory (OOM)" "the OOM kill was not reported in the exit status"
expect_line "^oom-event seq=1 container=c3\$" "no OOM event for container c3"
timings=$(printf '%s\n' "$console" | grep "^agent start" | head -n1)
rss=$(printf '%s\n' "$markers" | sed -n 's/^pid1-rss=//p')
pass "$GUEST_VMM: agent as PID 1 ran containers (exit code, stdio, OOM), reaped orphans; $timings; PID 1 $rss"
