#!/bin/sh
# Real-guest test: condo-runtime's cgroup v2 limits where PID 1 mounts a pure v2 hierarchy
# (inside the emulated KVM host, or a host with cgroup v2):
#   1. a pids limit stops a fork bomb (pids.max=32 holds, pids.events counts refusals);
#   2. a memory limit OOM-kills the container and the OOM is reported (exit 137, oom flag);
#   3. the device cgroup (eBPF) refuses devices outside the minimal set, even with CAP_MKNOD.
# Runs condo-runtime directly (no nested guest needed). Plain busybox sh.
. "$(dirname "$0")/lib.sh"
set -eu

rt=${CONDO_BIN_DIR:?CONDO_BIN_DIR not set}/condo-runtime
tmp=${CONDO_TEST_TMP:?CONDO_TEST_TMP not set}/runtime-cgroups
[ -x "$rt" ] || { echo "FAIL: $rt missing"; exit 1; }
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root"; exit 77; }
if ! grep -q ' /sys/fs/cgroup cgroup2 ' /proc/mounts; then
    echo "SKIP: /sys/fs/cgroup is not a cgroup2 mount here (hybrid or v1 host)"
    exit 77
fi

fail() { echo "FAIL: $*"; exit 1; }

# Waits (bounded) until "$@" succeeds: polls a condition, 0.1 s apart, up to 30 s.
wait_for() {
    n=0
    until "$@"; do
        n=$((n + 1))
        [ $n -lt 300 ] || return 1
        sleep 0.1
    done
}

rm -rf "$tmp"
mkdir -p "$tmp/rootfs/bin" "$tmp/rootfs/proc" "$tmp/rootfs/sys" "$tmp/rootfs/dev" "$tmp/rootfs/tmp"
bb=""
for p in /bin/busybox /usr/bin/busybox; do [ -x "$p" ] && bb=$p && break; done
[ -n "$bb" ] || fail "no busybox binary found"
cp "$bb" "$tmp/rootfs/bin/busybox"
for applet in $("$bb" --list); do
    [ -e "$tmp/rootfs/bin/$applet" ] || ln -s busybox "$tmp/rootfs/bin/$applet"
done
state="$tmp/state"

# --- 1. pids limit vs fork bomb -------------------------------------------------------------
b="$tmp/bomb"
mkdir -p "$b"
ln -s ../rootfs "$b/rootfs"
# The bomb runs in a child shell (a failed fork ends a non-interactive busybox sh); its
# sleeps stay behind in the container, and the init then sleeps too.
"$rt" spec --bundle "$b" --pids 32 --args sh -c 'sh -c "while :; do sleep 1000 & done"; sleep 1000'
"$rt" --root "$state" run --detach --bundle "$b" bomb </dev/null >"$tmp/bomb.out" 2>&1 ||
    fail "fork bomb container did not start: $(cat "$tmp/bomb.out")"
cg=/sys/fs/cgroup/condo/bomb
refused() { [ "$(awk '$1 == "max" {print $2}' "$cg/pids.events")" -gt 0 ] 2>/dev/null; }
wait_for refused || fail "pids.events never counted a refused fork (pids.current=$(cat "$cg/pids.current"))"
[ "$(cat "$cg/pids.max")" = 32 ] || fail "pids.max is $(cat "$cg/pids.max"), not 32"
current=$(cat "$cg/pids.current")
[ "$current" -le 32 ] || fail "pids.current $current exceeds the limit 32"
[ "$current" -ge 30 ] || fail "pids.current $current: the bomb did not reach the limit"
"$rt" --root "$state" stats bomb | grep -q '"pids_max": 32' || fail "stats do not show pids_max 32"
"$rt" --root "$state" delete --force bomb
[ ! -e "$cg" ] || fail "cgroup $cg left behind after delete"
echo "ok: pids limit held a fork bomb at $current/32 pids"

# --- 2. memory limit -> OOM kill, reported --------------------------------------------------
b="$tmp/oom"
mkdir -p "$b"
ln -s ../rootfs "$b/rootfs"
# tail buffers its one endless line from /dev/zero until the OOM killer stops it.
"$rt" spec --bundle "$b" --memory 33554432 --args tail /dev/zero
set +e
"$rt" --root "$state" run --keep --bundle "$b" oom </dev/null >"$tmp/oom.out" 2>&1
code=$?
set -e
[ "$code" = 137 ] || fail "OOM container exited $code, not 137: $(cat "$tmp/oom.out")"
grep -q "OOM-killed" "$tmp/oom.out" || fail "run did not report the OOM: $(cat "$tmp/oom.out")"
"$rt" --root "$state" state oom >"$tmp/oom.state"
grep -q '"oom_killed": true' "$tmp/oom.state" || fail "state does not record the OOM: $(cat "$tmp/oom.state")"
grep -q '"status": "stopped"' "$tmp/oom.state" || fail "state is not stopped: $(cat "$tmp/oom.state")"
"$rt" --root "$state" delete oom
[ ! -e /sys/fs/cgroup/condo/oom ] || fail "cgroup of oom left behind"
echo "ok: memory limit OOM-killed the container (exit 137) and the OOM was reported"

# --- 3. device cgroup -----------------------------------------------------------------------
b="$tmp/dev"
mkdir -p "$b"
ln -s ../rootfs "$b/rootfs"
"$rt" spec --bundle "$b" --args sh -c \
    'mknod /tmp/mem c 1 1 && echo made-mem; head -c 1 /dev/zero >/dev/null && echo zero-ok'
"$rt" --root "$state" run --bundle "$b" dev </dev/null >"$tmp/dev.out" 2>&1 || true
grep -q zero-ok "$tmp/dev.out" || fail "/dev/zero unusable in the container: $(cat "$tmp/dev.out")"
if grep -q made-mem "$tmp/dev.out"; then fail "mknod of /dev/mem (c 1:1) was allowed"; fi
grep -q "Operation not permitted" "$tmp/dev.out" || fail "mknod failed for another reason: $(cat "$tmp/dev.out")"
echo "ok: device cgroup refused c 1:1 and allowed /dev/zero"
exit 0
