#!/bin/sh
# The host reaches condo-agent (PID 1 of a real guest) over condo's virtio-vsock, jailed VMM:
# - condo vm run --vsock cid=3,uds=PATH --disk IMAGE,ro boots the agent from an initramfs; the
#   image disk (erofs holding a busybox root filesystem) is mounted by the agent
#   (condo.disk=/dev/vda:/images/busybox, tmpfs overlay on top);
# - `condo-agent ctl --target vsock-uds:PATH` pings it and runs a container from that disk:
#   its stdout and exit code come back to the host;
# - 16 streams at once all get through; CONNECT to a port nobody listens on is reset;
# - a guest-initiated connection to host port 5555 reaches a listener at PATH_5555;
# - the socket is root's, mode 0600, and is gone after condo exits.
. "$(dirname "$0")/lib.sh"

require_kvm
[ "$(id -u)" = 0 ] || skip "the jailed VMM needs root"
condo_can_boot || skip "condo cannot boot a guest yet ($CONDO_BIN_DIR/condo)"
help=$("$CONDO_BIN_DIR/condo" vm run --help 2>&1)
case "$help" in *--vsock*) ;; *) skip "condo vm run has no --vsock" ;; esac
case "$help" in *--disk*) ;; *) skip "condo vm run has no --disk (virtio-blk) yet" ;; esac
command -v mkfs.erofs >/dev/null 2>&1 || fail "no mkfs.erofs (erofs-utils; listed in host-tools)"
agent=$CONDO_BIN_DIR/condo-agent
[ -x "$agent" ] || fail "no static condo-agent at $agent"
jail_cgroup=$(jail_cgroup_flag)

T=$CONDO_TEST_TMP
# The image disk: busybox and its applets, and a marker file to recognise it by.
rootfs=$T/rootfs
busybox=$(static_busybox)
mkdir -p "$rootfs/bin" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/etc" "$rootfs/tmp"
cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
    [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
done
echo "root:x:0:0:root:/root:/bin/sh" >"$rootfs/etc/passwd"
echo "root:x:0:" >"$rootfs/etc/group"
image_id="vsock-agent-image-$$"
echo "$image_id" >"$rootfs/etc/image-id"
mkfs.erofs --quiet --all-root "$T/busybox.erofs" "$rootfs" >"$T/mkfs.log" 2>&1 ||
    { cat "$T/mkfs.log"; fail "mkfs.erofs of $rootfs failed"; }

# The guest: the agent as PID 1, and a background client that connects from the guest to the
# host's port 5555 (retrying until the host listener answers) and prints a marker.
nonce="vsock-agent-$$"
cat >"$T/init" <<INIT
#!/bin/busybox sh
/bin/busybox mknod -m 666 /dev/null c 1 3
(
    /bin/condo-agent ctl --target vsock:2:5555 --wait 240 ping
    echo "@@guest-connect rc=\$?@@ $nonce"
) &
exec /bin/condo-agent
INIT
make_initramfs "$T/agent.cpio.gz" "$T/init" "$agent:/bin/condo-agent"

# The sockets' directory must be searchable by the jailed VMM's uid (it is bound read-only
# into the jail for the <uds>_<port> listeners).
dir=$T/vsock
mkdir -p "$dir"
chmod 755 "$T" "$dir"
uds=$dir/v.sock
# The host side of guest-initiated connections: another agent, in host mode, on PATH_5555.
"$agent" --unix "${uds}_5555" --state-dir "$T/host-agent" >"$T/host-agent.log" 2>&1 &
HOST_AGENT=$!
waited=0
until [ -S "${uds}_5555" ]; do
    [ "$waited" -lt 300 ] || { cat "$T/host-agent.log"; fail "host agent did not listen on ${uds}_5555"; }
    sleep 0.1
    waited=$((waited + 1))
done
# The jailed VMM connects as its own uid.
chmod 666 "${uds}_5555"

log=$T/console.log
"$CONDO_BIN_DIR/condo" vm run --kernel "$CONDO_KERNEL_DIR/vmlinux" --initrd "$T/agent.cpio.gz" \
    --cmdline "console=ttyS0 reboot=k panic=-1 quiet condo.disk=/dev/vda:/images/busybox" \
    --vcpus 2 --memory 512 --console "$log" --disk "$T/busybox.erofs,ro" \
    --vsock "cid=3,uds=$uds" --jail-base "$T/jail" --jail-id "rg-vsock-$$" $jail_cgroup \
    </dev/null >"$T/condo.out" 2>&1 &
CONDO_PID=$!
trap 'stop_bounded "$CONDO_PID" "$HOST_AGENT"' EXIT
dump() {
    note "condo:"; tail -n 20 "$T/condo.out"
    note "guest console:"; tr -d '\r' <"$log" | tail -n 40
    note "seccomp kills in the kernel log:"; dmesg | grep 'type=1326' | tail -n 5
}

ctl="$agent ctl --target vsock-uds:$uds"
$ctl --wait 240 ping >"$T/ping.out" 2>&1 || { cat "$T/ping.out"; dump; fail "no ping over vsock"; }
note "ping over vsock: $(cat "$T/ping.out")"

mode=$(stat -c '%a %u' "$uds")
[ "$mode" = "600 0" ] || fail "vsock socket $uds is '$mode' (mode uid), want '600 0'"

$ctl run --rootfs /images/busybox --id c1 -- \
    sh -c 'echo "hello from $(cat /etc/image-id) on $(hostname)"; exit 7' >"$T/run.out" 2>"$T/run.err"
rc=$?
[ "$rc" = 7 ] || { cat "$T/run.out" "$T/run.err"; dump; fail "container exit code $rc over vsock, want 7"; }
grep -qx "hello from $image_id on condo" "$T/run.out" ||
    { cat "$T/run.out" "$T/run.err"; fail "container stdout did not come back over vsock"; }

# A port nobody listens on in the guest: the VMM closes the stream before OK.
"$agent" ctl --target "vsock-uds:$uds:4444" ping >"$T/reset.out" 2>&1
rc=$?
[ "$rc" != 0 ] || fail "ping on port 4444 (no listener) succeeded"
grep -q "before OK" "$T/reset.out" || { cat "$T/reset.out"; fail "port 4444 was not reset"; }

# Many streams at once.
i=0
pids=""
while [ $i -lt 16 ]; do
    $ctl ping >"$T/many.$i" 2>&1 &
    pids="$pids $!"
    i=$((i + 1))
done
failed=0
for p in $pids; do wait "$p" || failed=$((failed + 1)); done
[ "$failed" = 0 ] || { cat "$T"/many.*; fail "$failed of 16 concurrent pings failed"; }

# The guest's own connection to host port 5555.
waited=0
until tr -d '\r' <"$log" | grep -q "@@guest-connect rc=[0-9]*@@ $nonce"; do
    [ "$waited" -lt 1200 ] || { dump; fail "no guest-initiated connection marker within 120s"; }
    sleep 0.1
    waited=$((waited + 1))
done
tr -d '\r' <"$log" | grep -q "@@guest-connect rc=0@@ $nonce" ||
    { dump; fail "guest-initiated connection to ${uds}_5555 failed"; }

kill -TERM "$CONDO_PID"
wait_bounded "$CONDO_PID" 60 >/dev/null || true
trap 'kill -TERM "$HOST_AGENT" 2>/dev/null' EXIT
[ ! -e "$uds" ] || fail "vsock socket $uds left behind after condo exited"
pass "agent over jailed vsock: ping, container from the erofs disk (stdout, exit 7), RST on a closed port, 16 concurrent streams, guest→host ${uds##*/}_5555"
