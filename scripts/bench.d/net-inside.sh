# Inside the emulated KVM host, for scripts/bench.d/net (not run by itself: no exec bit).
# Prints one line per run: "bench-net: vmm=NAME mib=N secs=S mbps=R loop_core=F vcpu_core=F".
export CONDO_TEST_TMP=/tmp/bench-net CONDO_KERNEL_DIR=/condo/kernel
. /condo/lib.sh
export PATH="/usr/sbin:/sbin:$PATH"
MIB=${BENCH_NET_MIB:-64} RUNS=${BENCH_RUNS:-3}
CONDO=/condo/bin/condo T=$CONDO_TEST_TMP
[ -c /dev/net/tun ] || { mkdir -p /dev/net && mknod /dev/net/tun c 10 200; }

"$CONDO" net up --index 1 >"$T/a.net" || fail "condo net up"
trap '"$CONDO" net down --index 1' EXIT
field() { sed -n "1s/.*$1=\([^ ]*\).*/\1/p" "$T/a.net"; }
TAP=$(field tap) MAC=$(field mac) GUEST=$(field guest) GW=$(field gateway)
"$CONDO" net publish --index 1 -p 8080:5001 || fail "condo net publish"

MARKER="bench-net-ready-$$"
cat >"$T/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs dev /dev
ip link set eth0 up && ip addr add $GUEST/30 dev eth0 && ip route add default via $GW
echo $MARKER
while :; do nc -l -p 5001 >/dev/null; done
INIT
make_initramfs "$T/initrd.cpio.gz" "$T/init"

# cpu_ticks PID: "LOOP VCPUS": utime+stime of the main thread and of the vCPU threads.
cpu_ticks() {
    loop=0 vcpus=0
    for task in /proc/"$1"/task/*; do
        t=$(cut -d' ' -f14,15 "$task/stat" | awk '{ print $1 + $2 }')
        case "$(cat "$task/comm")" in
            vcpu* | CPU*) vcpus=$((vcpus + t)) ;;
            *) [ "${task##*/}" = "$1" ] && loop=$((loop + t)) ;;
        esac
    done
    echo "$loop $vcpus"
}
# The VMM process: the one with a vCPU thread (condo's VMM is a jailed grandchild).
vmm_pid() {
    for comm in /proc/[0-9]*/task/*/comm; do
        case "$(cat "$comm" 2>/dev/null)" in
            vcpu0 | "CPU 0/KVM") p=${comm#/proc/}; echo "${p%%/*}"; return 0 ;;
        esac
    done
    return 1
}

one_run() { # NAME
    log="$T/$1.console"
    : >"$log"
    case $1 in
        condo) "$CONDO" vm run --kernel "$CONDO_KERNEL_DIR/vmlinux" --initrd "$T/initrd.cpio.gz" \
                --memory 256 --net "tap=$TAP,mac=$MAC" --console "$log" \
                --cmdline "console=ttyS0 reboot=k panic=-1 quiet" </dev/null >"$log.vmm" 2>&1 & ;;
        qemu) qemu-system-x86_64 -M microvm,acpi=off -enable-kvm -cpu host -m 256 -smp 1 \
                -nodefaults -no-user-config -display none -no-reboot -device i8042 \
                -name bench,debug-threads=on -serial "file:$log" \
                -kernel "$CONDO_KERNEL_DIR/bzImage" -initrd "$T/initrd.cpio.gz" \
                -append "console=ttyS0 reboot=k panic=-1 quiet" \
                -netdev "tap,id=n0,ifname=$TAP,script=no,downscript=no,vhost=off" \
                -device "virtio-net-device,netdev=n0,mac=$MAC" </dev/null >"$log.vmm" 2>&1 & ;;
    esac
    launcher=$!
    i=0
    until grep -q "$MARKER" "$log" 2>/dev/null; do
        i=$((i + 1)); [ $i -lt 600 ] || { cat "$log" "$log.vmm"; fail "$1: guest not ready"; }
        sleep 0.2
    done
    pid=$(vmm_pid) || fail "$1: no VMM process found"
    # The guest's nc may not listen yet: retry a 1-byte connection until it takes.
    i=0
    until echo | nc "$GW" 8080 2>/dev/null; do
        i=$((i + 1)); [ $i -lt 100 ] || fail "$1: published port never answered"
        sleep 0.2
    done
    set -- "$1" $(cpu_ticks "$pid")
    start=$(cut -d' ' -f1 /proc/uptime)
    dd if=/dev/zero bs=65536 count=$((MIB * 16)) 2>/dev/null | nc "$GW" 8080 ||
        fail "$1: transfer failed"
    end=$(cut -d' ' -f1 /proc/uptime)
    set -- "$@" $(cpu_ticks "$pid")
    kill "$launcher" 2>/dev/null; wait "$launcher" 2>/dev/null
    awk -v n="$1" -v mib="$MIB" -v s="$start" -v e="$end" -v l0="$2" -v v0="$3" -v l1="$4" -v v1="$5" \
        'BEGIN { w = e - s; if (w <= 0) w = 0.01;
                 printf "bench-net: vmm=%s mib=%d secs=%.2f mbps=%.1f loop_core=%.3f vcpu_core=%.3f\n",
                        n, mib, w, mib * 1.048576 / w, (l1 - l0) / 100 / w, (v1 - v0) / 100 / w }'
}

# measure NAME HOST_PORT PID: one transfer to HOST_PORT on the host's own address; prints a line.
measure() {
    i=0
    until echo | nc "$GW" "$2" 2>/dev/null; do
        i=$((i + 1)); [ $i -lt 100 ] || fail "$1: published port $2 never answered"
        sleep 0.2
    done
    set -- "$1" "$2" $(cpu_ticks "$3")
    start=$(cut -d' ' -f1 /proc/uptime)
    dd if=/dev/zero bs=65536 count=$((MIB * 16)) 2>/dev/null | nc "$GW" "$2" || fail "$1: transfer failed"
    end=$(cut -d' ' -f1 /proc/uptime)
    set -- "$@" $(cpu_ticks "$pid")
    awk -v n="$1" -v mib="$MIB" -v s="$start" -v e="$end" -v l0="$3" -v v0="$4" -v l1="$5" -v v1="$6" \
        'BEGIN { w = e - s; if (w <= 0) w = 0.01;
                 printf "bench-net: vmm=%s mib=%d secs=%.2f mbps=%.1f loop_core=%.3f vcpu_core=%.3f\n",
                        n, mib, w, mib * 1.048576 / w, (l1 - l0) / 100 / w, (v1 - v0) / 100 / w }'
}

r=0
while [ $r -lt "$RUNS" ]; do
    one_run condo
    one_run qemu
    r=$((r + 1))
done

# The same through the CLI to a container with its own network namespace. Its nc's stdin
# stays open (a fifo held read-write): at EOF busybox nc half-closes, and the sender would
# stop early.
"$CONDO" net down --index 1
export CONDO_RUN_DIR="$T/run" CONDO_STATE_DIR="$T/state" CONDO_CACHE="$T/cache"
export CONDO_KERNEL="$CONDO_KERNEL_DIR/vmlinux" CONDO_AGENT=/condo/bin/condo-agent
rootfs=$T/rootfs
mkdir -p "$rootfs/bin" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/etc" "$rootfs/tmp"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
done
"$CONDO" image import "$rootfs" --name busybox >/dev/null 2>&1 || fail "image import"
trap '"$CONDO" tenant rm --force benchnet >/dev/null 2>&1' EXIT
"$CONDO" tenant create --net --image busybox --memory 256m benchnet >"$T/create.out" 2>&1 ||
    { cat "$T/create.out"; fail "tenant create --net"; }
"$CONDO" run -d --tenant benchnet --name sink -p 8082:5001 busybox sh -c \
    'mkfifo /tmp/hold && exec 3<>/tmp/hold; while :; do nc -l -p 5001 <&3 >/dev/null; done' \
    >/dev/null 2>&1 || fail "condo run sink"
GW=$(tr -d ' \n' <"$CONDO_RUN_DIR/tenants/benchnet/config.json" | sed -n 's/.*"net":{"index":\([0-9]*\).*/\1/p')
GW="10.231.$((GW * 16 / 256)).$((GW * 16 % 256 + 1))"
pid=$(vmm_pid) || fail "no VMM process for the tenant"
r=0
while [ $r -lt "$RUNS" ]; do
    measure condo-container 8082 "$pid"
    r=$((r + 1))
done
