# Helpers for real-guest tests. Sourced by tests/real-guest/<name>.sh:
#     . "$(dirname "$0")/lib.sh"
# Written for POSIX sh: inside the emulated KVM host only busybox is there.
#
# Env (set by scripts/real-guest-tests): CONDO_BIN_DIR (static condo, condo-agent,
# condo-runtime), CONDO_KERNEL_DIR (vmlinux, bzImage, config), CONDO_TEST_TMP (scratch dir).
# Exit status of a test: 0 PASS, 77 SKIP (say why), anything else FAIL.

TEST_NAME=$(basename "$0" .sh)

pass() { echo "$TEST_NAME: PASS${1:+: $*}"; exit 0; }
skip() { echo "$TEST_NAME: SKIP: $*"; exit 77; }
fail() { echo "$TEST_NAME: FAIL: $*"; exit 1; }
note() { echo "$TEST_NAME: $*"; }

: "${CONDO_TEST_TMP:?CONDO_TEST_TMP must name a scratch directory}"
: "${CONDO_KERNEL_DIR:?CONDO_KERNEL_DIR must name the guest kernel directory}"
CONDO_BIN_DIR=${CONDO_BIN_DIR:-}
mkdir -p "$CONDO_TEST_TMP"

# A usable /dev/kvm is the one thing every real-guest test needs.
require_kvm() {
    [ -c /dev/kvm ] || skip "no /dev/kvm here (run through scripts/real-guest-tests)"
    [ -r /dev/kvm ] && [ -w /dev/kvm ] || skip "/dev/kvm is not readable and writable by $(id -un)"
    # PVM's KVM cannot boot stock kernels (see scripts/real-guest-tests for where tests run).
    [ ! -d /sys/module/kvm_pvm ] || skip "/dev/kvm is PVM, which cannot boot a stock kernel (run through scripts/real-guest-tests)"
}

# A pure cgroup v2 hierarchy at /sys/fs/cgroup (busybox `stat -f` cannot tell, /proc/mounts can).
has_cgroup2() {
    awk '$2 == "/sys/fs/cgroup" && $3 == "cgroup2" { found = 1 } END { exit !found }' /proc/mounts
}
require_cgroup2() {
    has_cgroup2 || skip "no cgroup2 hierarchy mounted at /sys/fs/cgroup"
}

# The flag a jailed `condo vm run` needs on this host: none with cgroup v2, else the opt-out.
jail_cgroup_flag() {
    has_cgroup2 || echo "--jail-no-cgroup"
}

# For tests of the condo CLI: state under $CONDO_TEST_TMP, the test's kernel and agent, the
# jail's cgroup opt-out where there is no cgroup v2, and `condo` for the static binary.
condo_cli_env() {
    T=$CONDO_TEST_TMP
    chmod 755 "$T"
    export CONDO_RUN_DIR="$T/run" CONDO_STATE_DIR="$T/state" CONDO_CACHE="$T/cache"
    export CONDO_KERNEL="$CONDO_KERNEL_DIR/vmlinux" CONDO_AGENT="$CONDO_BIN_DIR/condo-agent"
    has_cgroup2 || export CONDO_JAIL_NO_CGROUP=1
}
condo() { "$CONDO_BIN_DIR/condo" "$@"; }

# The console and VMM log tails of every tenant (LINES lines of console, default 30).
dump_tenants() {
    for d in "$CONDO_RUN_DIR"/tenants/*; do
        [ -d "$d" ] || continue
        note "console of $(basename "$d"):"; tr -d '\r' <"$d/console.log" 2>/dev/null | tail -n "${1:-30}"
        note "vmm log of $(basename "$d"):"; tail -n 20 "$d/vmm.log" 2>/dev/null
    done
}

# Removes every tenant the test made (for an EXIT trap).
remove_tenants() {
    for d in "$CONDO_RUN_DIR"/tenants/*; do
        [ -d "$d" ] && condo tenant rm --force "$(basename "$d")" >/dev/null 2>&1
    done
}

# Path of a static busybox to put into guest initramfs images.
static_busybox() {
    for b in /bin/busybox /usr/bin/busybox; do
        [ -x "$b" ] && { echo "$b"; return 0; }
    done
    fail "no busybox to build the guest initramfs (install busybox-static)"
}

# make_initramfs OUT INIT_SCRIPT [SRC:DEST]...
#   Builds a gzip'd newc cpio at OUT: busybox (applets linked at boot), INIT_SCRIPT as /init,
#   and each SRC copied to DEST inside the image.
make_initramfs() {
    out=$1 init=$2
    shift 2
    [ -f "$init" ] || fail "make_initramfs: init script '$init' does not exist"
    stage=$(mktemp -d "$CONDO_TEST_TMP/initramfs.XXXXXX")
    mkdir -p "$stage/bin" "$stage/sbin" "$stage/usr/bin" "$stage/usr/sbin" \
        "$stage/proc" "$stage/sys" "$stage/dev" "$stage/tmp" "$stage/run" "$stage/etc"
    cp "$(static_busybox)" "$stage/bin/busybox"
    cp "$init" "$stage/init"
    chmod 755 "$stage/init"
    for spec in "$@"; do
        src=${spec%%:*} dest=${spec#*:}
        [ -e "$src" ] || fail "make_initramfs: '$src' does not exist"
        mkdir -p "$stage$(dirname "$dest")"
        cp -r "$src" "$stage$dest"
    done
    (cd "$stage" && find . | cpio -o -H newc 2>/dev/null) | gzip -1 >"$out" ||
        fail "make_initramfs: could not write $out"
    rm -rf "$stage"
}

# True when $CONDO_BIN_DIR/condo exists and its `vm run` takes --kernel and --initrd
# (the workspace skeleton's condo accepts anything and does nothing).
condo_can_boot() {
    [ -n "$CONDO_BIN_DIR" ] && [ -x "$CONDO_BIN_DIR/condo" ] || return 1
    help=$("$CONDO_BIN_DIR/condo" vm run --help 2>&1) || return 1
    case "$help" in *--kernel*--initrd*) return 0 ;; *) return 1 ;; esac
}

# boot_guest LOG TIMEOUT INITRD CMDLINE VCPUS MEMORY_MIB
#   Boots CONDO_KERNEL_DIR's kernel with INITRD under condo's VMM (or QEMU microvm as the
#   stand-in while condo cannot boot), console to LOG. Returns the VMM's exit status; 124 when
#   TIMEOUT seconds passed. GUEST_VMM names the VMM that was used.
boot_guest() {
    log=$1 secs=$2 initrd=$3 cmdline=$4 vcpus=$5 mem=$6
    if condo_can_boot; then
        GUEST_VMM=condo
        set -- "$CONDO_BIN_DIR/condo" vm run --kernel "$CONDO_KERNEL_DIR/vmlinux" \
            --initrd "$initrd" --cmdline "$cmdline" --vcpus "$vcpus" --memory "$mem" \
            --console "$log"
    elif command -v qemu-system-x86_64 >/dev/null 2>&1; then
        GUEST_VMM=qemu-microvm
        set -- qemu-system-x86_64 -M microvm,acpi=off -enable-kvm -cpu host \
            -smp "$vcpus" -m "$mem" -nodefaults -no-user-config -display none -no-reboot \
            -device i8042 -serial "file:$log" \
            -kernel "$CONDO_KERNEL_DIR/bzImage" -initrd "$initrd" -append "$cmdline"
    else
        skip "no guest VMM: condo cannot boot yet ($CONDO_BIN_DIR/condo vm run) and no qemu-system-x86_64"
    fi
    : >"$log"
    note "booting the guest with $GUEST_VMM (timeout ${secs}s)"
    timeout -s KILL "$secs" "$@" </dev/null >"$log.vmm" 2>&1
    rc=$?
    # timeout -s KILL reports the kill as 128+9 (busybox) or 124/137 (coreutils).
    case $rc in 124 | 137) rc=124 ;; esac
    return $rc
}

# wait_bounded PID SECS: waits up to SECS seconds for PID (a child of this shell) to end and
# returns its exit status; after SECS it is killed with SIGKILL and 124 is returned. A test
# never waits on a VMM without a bound: a stuck one must fail the test, not hang the suite.
wait_bounded() {
    pid=$1 left=$(($2 * 10))
    # kill -0 succeeds on a zombie too: look at the state instead.
    while [ -d "/proc/$pid" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null; do
        if [ "$left" -le 0 ]; then
            note "pid $pid still running after ${2}s: killing it"
            kill -KILL "$pid" 2>/dev/null
            wait "$pid"
            return 124
        fi
        sleep 0.1
        left=$((left - 1))
    done
    wait "$pid"
}

# stop_bounded PID...: SIGTERM, then up to 30 s for each to end (then SIGKILL, see above).
stop_bounded() {
    kill -TERM "$@" 2>/dev/null
    for p in "$@"; do wait_bounded "$p" 30 >/dev/null; done
}

# Seconds since boot of the machine running the test, centisecond resolution (busybox has no %N).
uptime_seconds() { cut -d' ' -f1 /proc/uptime; }
