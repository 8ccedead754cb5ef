#!/bin/sh
# condo's jailed VMM on a host with a pure cgroup v2 (the emulated KVM host): a real Linux
# guest boots inside the jail; while it waits for a line on its console the test checks from
# the host that the tenant's cgroup /sys/fs/cgroup/condo/<id> holds the VMM with cpu.max,
# memory.max and pids.max sized from the VM, and that every VMM thread runs filtered
# (Seccomp 2), without capabilities, under the tenant's own uid. Then the guest gets its line,
# resets, condo exits 0, and neither the cgroup nor the jail directory is left.
. "$(dirname "$0")/lib.sh"

require_kvm
require_cgroup2
[ "$(id -u)" = 0 ] || skip "the jail needs root"
condo_can_boot || skip "condo cannot boot a guest yet ($CONDO_BIN_DIR/condo)"
for c in cpu memory pids; do
    tr ' ' '\n' </sys/fs/cgroup/cgroup.controllers | grep -qx "$c" ||
        skip "the cgroup v2 hierarchy lacks the $c controller"
done

ID=rg-jail-$$
VCPUS=2
MEM=128
BASE="$CONDO_TEST_TMP/jail"
CG=/sys/fs/cgroup/condo/$ID
MARKER="condo-jail-$$"
{
    echo '#!/bin/busybox sh'
    echo '/bin/busybox mount -t proc proc /proc'
    echo "echo '$MARKER ready'"
    echo 'read -r line'
    echo "echo \"$MARKER got \$line\""
    echo '/bin/busybox reboot -f'
} >"$CONDO_TEST_TMP/jail-init"
make_initramfs "$CONDO_TEST_TMP/jail.cpio.gz" "$CONDO_TEST_TMP/jail-init"

IN="$CONDO_TEST_TMP/jail-in"
OUT="$CONDO_TEST_TMP/jail-out"
ERR="$CONDO_TEST_TMP/jail-err"
rm -f "$IN"
mkfifo "$IN" || fail "mkfifo $IN"
"$CONDO_BIN_DIR/condo" vm run --kernel "$CONDO_KERNEL_DIR/vmlinux" \
    --initrd "$CONDO_TEST_TMP/jail.cpio.gz" --cmdline "console=ttyS0 reboot=k panic=-1 quiet" \
    --vcpus "$VCPUS" --memory "$MEM" --jail-base "$BASE" --jail-id "$ID" \
    <"$IN" >"$OUT" 2>"$ERR" &
CONDO_PID=$!
exec 3>"$IN" # the guest's console input stays open until the test writes its line
# On failure, SIGTERM lets condo end the jail and remove it.
trap 'stop_bounded "$CONDO_PID"' EXIT

# Bounded wait for the guest's marker (busybox has no inotify tool: poll the output file).
waited=0
until grep -q "$MARKER ready" "$OUT" 2>/dev/null; do
    kill -0 "$CONDO_PID" 2>/dev/null || { cat "$ERR"; fail "condo exited before the guest was ready"; }
    [ "$waited" -lt 1200 ] || { tail -n 20 "$OUT" "$ERR"; fail "no guest marker within 120s"; }
    sleep 0.1
    waited=$((waited + 1))
done

[ -d "$CG" ] || fail "no cgroup $CG while the VMM runs"
want_cpu="$((VCPUS * 100000)) 100000"
want_mem=$(((MEM + 64) * 1024 * 1024))
want_pids=$((VCPUS + 16))
[ "$(cat "$CG/cpu.max")" = "$want_cpu" ] || fail "cpu.max is '$(cat "$CG/cpu.max")', want '$want_cpu'"
[ "$(cat "$CG/memory.max")" = "$want_mem" ] || fail "memory.max is $(cat "$CG/memory.max"), want $want_mem"
[ "$(cat "$CG/pids.max")" = "$want_pids" ] || fail "pids.max is $(cat "$CG/pids.max"), want $want_pids"

# The cgroup holds the jail's init and the VMM (the one with threads); on kernels where KVM's
# NX huge page recovery worker is a kernel thread, it is attached to the VM's cgroup too.
vmm=""
others=""
for pid in $(cat "$CG/cgroup.procs"); do
    name=$(awk '$1 == "Name:" { print $2 }' "/proc/$pid/status")
    case $name in kvm-*) continue ;; esac
    threads=$(awk '$1 == "Threads:" { print $2 }' "/proc/$pid/status")
    if [ "$threads" -gt 1 ]; then vmm=$pid; else others="$others $pid"; fi
done
[ -n "$vmm" ] || fail "no multi-threaded VMM in the cgroup: $(cat "$CG/cgroup.procs" | tr '\n' ' ')"
[ "$(echo $others | wc -w)" -eq 1 ] || fail "besides the VMM the cgroup holds:$others (want the jail's init only)"
uid=$(awk '/^Uid:/ { print $2 }' "/proc/$vmm/status")
[ "$uid" != 0 ] || fail "the VMM runs as root"
filtered=0
for task in /proc/"$vmm"/task/*; do
    status="$task/status"
    name=$(awk '$1 == "Name:" { print $2 }' "$status")
    capeff=$(awk '$1 == "CapEff:" { print $2 }' "$status")
    tuid=$(awk '$1 == "Uid:" { print $2 }' "$status")
    seccomp=$(awk '$1 == "Seccomp:" { print $2 }' "$status")
    [ "$capeff" = 0000000000000000 ] || fail "thread $name has CapEff $capeff"
    [ "$tuid" = "$uid" ] || fail "thread $name runs as uid $tuid, not $uid"
    # KVM's own worker (kvm-nx-lpage-recovery) joins the thread group; it runs no user code.
    case $name in kvm-*) continue ;; esac
    [ "$seccomp" = 2 ] || fail "thread $name has Seccomp $seccomp"
    filtered=$((filtered + 1))
done
[ "$filtered" -eq $((VCPUS + 1)) ] || fail "$filtered filtered threads, want $((VCPUS + 1))"

echo "go" >&3
exec 3>&-
wait_bounded "$CONDO_PID" 120
rc=$?
trap - EXIT
[ "$rc" -eq 0 ] || { tail -n 20 "$OUT" "$ERR"; fail "condo exited $rc, want 0 after the guest's reset"; }
grep -q "$MARKER got go" "$OUT" || fail "the guest did not get its line"
[ ! -d "$CG" ] || fail "the cgroup $CG was left behind"
[ ! -d "$BASE/$ID" ] || fail "the jail directory $BASE/$ID was left behind"
pass "jailed VMM (uid $uid) in $CG (cpu.max $want_cpu, memory.max $want_mem, pids.max $want_pids), $filtered threads with Seccomp 2; cgroup and jail removed"
