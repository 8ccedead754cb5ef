#!/bin/sh
# condo's CLI end to end with --isolation vm (the default): tenants are jailed microVMs booted
# from condo's kernel with the static agent as /init, images reach them as read-only
# virtio-blk disks and the CLI talks to each agent over virtio-vsock.
# - an image imported into the store (condo image import);
# - two tenants; a container in each; exec, logs, stop, ps;
# - a tenant's console limit reaches its VMM and its console.log stays within it;
# - `run -d --rm`: the guest's agent removes the container when it exits (by itself or
#   stopped); `condo wait` gives its code, then ps -a and logs no longer know it;
# - `run -t`: the process's stdin and stdout are a pty of the container's own devpts;
# - tenant B sees neither A's processes nor A's files;
# - a container on a tenant without its image is refused with how to attach it;
# - `condo tenant rm` leaves no process, jail, socket or run directory;
# - a VMM killed with SIGKILL is reported dead, and `condo tenant rm` cleans it up.
. "$(dirname "$0")/lib.sh"

require_kvm
[ "$(id -u)" = 0 ] || skip "tenants need root (the jailed VMM)"
condo_can_boot || skip "condo cannot boot a guest yet ($CONDO_BIN_DIR/condo)"
help=$("$CONDO_BIN_DIR/condo" vm run --help 2>&1)
case "$help" in *--vsock*--disk*|*--disk*--vsock*) ;; *) skip "condo vm run lacks --disk or --vsock" ;; esac
"$CONDO_BIN_DIR/condo" tenant --help >/dev/null 2>&1 || skip "condo has no tenant command"
command -v mkfs.erofs >/dev/null 2>&1 || fail "no mkfs.erofs (erofs-utils; listed in host-tools)"

condo_cli_env
dump() { dump_tenants 30; }
trap remove_tenants EXIT

rootfs=$T/rootfs
busybox=$(static_busybox)
mkdir -p "$rootfs/bin" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/etc" "$rootfs/tmp"
cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
    [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
done
condo image import "$rootfs" --name busybox >"$T/import.out" 2>&1 ||
    { cat "$T/import.out"; fail "condo image import failed"; }

start=$(uptime_seconds)
condo tenant create --image busybox --memory 256m --console-limit 4k tenant-a >"$T/create-a.out" 2>&1 ||
    { cat "$T/create-a.out"; dump; fail "tenant create tenant-a failed"; }
note "tenant-a ready in $(awk "BEGIN { print $(uptime_seconds) - $start }") s"
# Its console.log is bounded: the limit reaches its VMM, and the file stays within it.
pid_a=$(cut -d" " -f1 "$CONDO_RUN_DIR/tenants/tenant-a/vmm.pid")
case "$(tr '\0' ' ' <"/proc/$pid_a/cmdline")" in
*"--console-limit 4096 "*) ;;
*) fail "tenant-a's VMM was not given its console limit: $(tr '\0' ' ' <"/proc/$pid_a/cmdline")" ;;
esac
size=$(wc -c <"$CONDO_RUN_DIR/tenants/tenant-a/console.log")
[ "$size" -le 4096 ] || fail "tenant-a's console.log holds $size bytes, over its 4096-byte limit"
note "tenant-a's console.log: $size bytes; $(head -n 1 "$CONDO_RUN_DIR/tenants/tenant-a/console.log" | cut -c1-80)"
# tenant-b is created by its first run (the image of that run is attached).
out=$(condo run --tenant tenant-b --rm busybox echo hello from b 2>&1) ||
    { echo "$out"; dump; fail "first run in a new tenant failed"; }
[ "$out" = "hello from b" ] || fail "run in tenant-b printed '$out'"

out=$(condo run --tenant tenant-a --rm busybox sh -c 'echo hello from $(hostname); exit 7' 2>&1)
rc=$?
[ "$rc" = 7 ] || { echo "$out"; dump; fail "exit code $rc, want 7"; }
case "$out" in "hello from c-"*) ;; *) fail "run in tenant-a printed '$out'" ;; esac

condo run -d --tenant tenant-a --name web busybox sh -c \
    'echo secret >/tmp/secret; echo started; exec sleep 1000' >"$T/run-d.out" 2>&1 ||
    { cat "$T/run-d.out"; dump; fail "run -d failed"; }
waited=0
until [ "$(condo exec web cat /tmp/secret 2>/dev/null)" = secret ]; do
    [ "$waited" -lt 300 ] || { dump; fail "exec never saw web's file"; }
    sleep 0.1
    waited=$((waited + 1))
done
condo logs web | grep -qx started || fail "logs of web lack 'started'"
condo ps | grep -q "^web .*tenant-a .*running" || { condo ps; fail "ps does not show web running"; }

out=$(condo run --tenant tenant-b --rm busybox sh -c 'ps -o args; ls /tmp' 2>&1)
case "$out" in *"sleep 1000"*|*secret*) fail "tenant-b sees tenant-a: $out" ;; esac

err=$(condo run --tenant tenant-a --isolation process busybox true 2>&1) &&
    fail "a run asking another isolation of tenant-a succeeded"
case "$err" in *"exists with --isolation vm"*) ;; *) fail "wrong isolation error: $err" ;; esac

condo stop -t 1 web >"$T/stop.out" 2>&1 || { cat "$T/stop.out"; fail "stop web failed"; }
condo ps -a | grep -q "^web .*killed (SIGKILL)" || { condo ps -a; fail "ps -a does not show web killed"; }
condo rm web >/dev/null || fail "rm web failed"

# -t: the container's process gets a terminal made in the guest (no local one needed here).
out=$(condo run -t --rm --tenant tenant-a busybox sh -c 'tty; [ -t 0 ] && [ -t 1 ] && echo on-a-tty' 2>&1) ||
    { echo "$out"; dump; fail "run -t failed"; }
case "$out" in */dev/pts/*on-a-tty*) ;; *) fail "run -t printed '$out'" ;; esac

# -d --rm: removed by the guest's agent on exit; `condo wait` (bounded here) returns once it is.
condo run -d --rm --tenant tenant-a --name once busybox sh -c 'echo bye; exit 4' >"$T/run-rm.out" 2>&1 ||
    { cat "$T/run-rm.out"; dump; fail "run -d --rm failed"; }
out=$(timeout 60 "$CONDO_BIN_DIR/condo" wait once 2>&1) || { echo "$out"; dump; fail "wait once failed"; }
[ "$out" = 4 ] || fail "wait once printed '$out', want 4"
condo run -d --rm --tenant tenant-a --name sleeper busybox sleep 1000 >"$T/run-rm2.out" 2>&1 ||
    { cat "$T/run-rm2.out"; dump; fail "run -d --rm sleeper failed"; }
out=$(timeout 60 "$CONDO_BIN_DIR/condo" stop -t 1 sleeper 2>&1) || { echo "$out"; fail "stop sleeper failed"; }
for gone in once sleeper; do
    condo ps -a | grep -q "^$gone " && { condo ps -a; fail "ps -a still lists the removed $gone"; }
    err=$(condo logs "$gone" 2>&1) && fail "logs of the removed $gone succeeded"
    case "$err" in *"no container \"$gone\""*) ;; *) fail "logs of the removed $gone: '$err'" ;; esac
done

dir_a=$CONDO_RUN_DIR/tenants/tenant-a
condo tenant rm tenant-a >"$T/rm-a.out" 2>&1 || { cat "$T/rm-a.out"; fail "tenant rm tenant-a failed"; }
[ ! -e "$dir_a" ] || fail "$dir_a remains"
[ ! -e /srv/condo/jail/tenant-a ] || fail "the jail of tenant-a remains"
left=$(ps -eo args | grep -c "[t]enants/tenant-a/")
[ "$left" = 0 ] || fail "$left processes of tenant-a remain"

# A VMM that dies: reported dead, then cleaned up.
pid=$(cut -d" " -f1 "$CONDO_RUN_DIR/tenants/tenant-b/vmm.pid")  # PID START_TIME
# The tenant's VMM is the lean condo-vmm shipped beside condo.
vmm_cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline")
case "$vmm_cmd" in */condo-vmm\ --kernel*) ;; *) fail "tenant-b's VMM is not condo-vmm: $vmm_cmd" ;; esac
kill -KILL "$pid"
waited=0
until condo tenant ls | grep -q "^tenant-b .* dead "; do
    [ "$waited" -lt 100 ] || { condo tenant ls; fail "killed VMM not reported dead"; }
    sleep 0.1
    waited=$((waited + 1))
done
err=$(condo run --tenant tenant-b --rm busybox true 2>&1) && fail "a run on a dead tenant succeeded"
case "$err" in *dead*) ;; *) fail "run on a dead tenant: '$err'" ;; esac
condo tenant rm tenant-b >"$T/rm-b.out" 2>&1 || { cat "$T/rm-b.out"; fail "tenant rm of the dead tenant failed"; }
[ ! -e "$CONDO_RUN_DIR/tenants/tenant-b" ] || fail "dead tenant-b's run directory remains"
[ ! -e /srv/condo/jail/tenant-b ] || fail "dead tenant-b's jail remains"
[ ! -e /sys/fs/cgroup/condo/tenant-b ] || fail "dead tenant-b's jail cgroup remains"
left=$(ps -eo args | grep -c "[t]enants/tenant-b/")
[ "$left" = 0 ] || fail "$left processes of tenant-b remain"
pass "two tenant VMs: run, exec, logs, stop, ps, run -d --rm, run -t, isolation, bounded console.log, tenant rm leaves nothing, a killed VMM reported dead and cleaned up"
