#!/bin/sh
# virtio-net end to end: condo's (jailed) VMM boots the guest kernel with --net on a host tap;
# the guest configures eth0 with busybox, pings the host, fetches a 2 MiB file from the host's
# httpd (RX) and sends one to the host's nc (TX); both sides compare sizes and checksums.
. "$(dirname "$0")/lib.sh"

require_kvm
# iproute2 (copied in as a host tool): busybox's ip has no tuntap, and busybox sh runs its
# own applets before looking at PATH, so name it by path.
IP=$(command -v /usr/sbin/ip || command -v /sbin/ip) || skip "no iproute2 ip (tests/real-guest/host-tools)"
[ -x "$CONDO_BIN_DIR/condo" ] || fail "no condo binary in CONDO_BIN_DIR=$CONDO_BIN_DIR"
"$CONDO_BIN_DIR/condo" vm run --help 2>&1 | grep -q -- '--net' || skip "condo vm run has no --net"
[ -c /dev/net/tun ] || { mkdir -p /dev/net && mknod /dev/net/tun c 10 200; } 2>/dev/null
[ -c /dev/net/tun ] || skip "no /dev/net/tun (tun module missing)"

TAP=condo-rgt0
HOST_IP=10.231.0.1 GUEST_IP=10.231.0.2 MAC=02:c0:d0:00:00:00
"$IP" tuntap add dev "$TAP" mode tap vnet_hdr || fail "cannot make tap $TAP"
cleanup() { "$IP" link del "$TAP" 2>/dev/null; kill "$HTTPD_PID" "$NC_PID" 2>/dev/null; }
trap cleanup EXIT
"$IP" addr add "$HOST_IP/30" dev "$TAP" && "$IP" link set "$TAP" up || fail "cannot configure $TAP"

WWW="$CONDO_TEST_TMP/www"
mkdir -p "$WWW"
dd if=/dev/urandom of="$WWW/rx.bin" bs=1024 count=2048 2>/dev/null
RX_SUM=$(md5sum <"$WWW/rx.bin" | cut -d' ' -f1)
httpd -f -p "$HOST_IP:8080" -h "$WWW" &
HTTPD_PID=$!
# The receiver's stdin stays open (fd 3 holds the fifo) so it does not half-close first: it
# ends when the guest's nc is done sending, and the guest's nc ends when it does.
mkfifo "$CONDO_TEST_TMP/hold"
nc -l -p 9000 <"$CONDO_TEST_TMP/hold" >"$CONDO_TEST_TMP/tx.received" &
NC_PID=$!
exec 3>"$CONDO_TEST_TMP/hold"

MARKER="condo-net-virtio-$$"
cat >"$CONDO_TEST_TMP/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
mac=\$(cat /sys/class/net/eth0/address)
ip link set eth0 up && ip addr add $GUEST_IP/30 dev eth0
ping -c 2 -W 5 $HOST_IP >/dev/null && echo "$MARKER ping=ok mac=\$mac" || echo "$MARKER ping=failed mac=\$mac"
echo "$MARKER rx=\$(wget -q -O - http://$HOST_IP:8080/rx.bin | md5sum | cut -d' ' -f1)"
dd if=/dev/urandom of=/tx.bin bs=1024 count=2048 2>/dev/null
echo "$MARKER tx=\$(wc -c </tx.bin) \$(md5sum </tx.bin | cut -d' ' -f1)"
nc $HOST_IP 9000 </tx.bin
echo "$MARKER done"
reboot -f
INIT
make_initramfs "$CONDO_TEST_TMP/initrd.cpio.gz" "$CONDO_TEST_TMP/init"

log="$CONDO_TEST_TMP/console.log"
start=$(uptime_seconds)
timeout -s KILL 300 "$CONDO_BIN_DIR/condo" vm run --kernel "$CONDO_KERNEL_DIR/vmlinux" \
    --initrd "$CONDO_TEST_TMP/initrd.cpio.gz" --memory 256 --net "tap=$TAP,mac=$MAC" \
    --cmdline "console=ttyS0 reboot=k panic=-1 quiet" --console "$log" </dev/null >"$log.vmm" 2>&1
rc=$?
took=$(awk -v s="$start" -v e="$(uptime_seconds)" 'BEGIN { printf "%.1f", e - s }')
lines=$(tr -d '\r' <"$log" | grep -o "$MARKER .*")
show() { note "guest console:"; tail -n 40 "$log"; note "condo output:"; cat "$log.vmm"; }
echo "$lines" | grep -q " done$" || { show; fail "the guest did not finish (condo exited $rc after ${took}s)"; }
[ "$rc" -eq 0 ] || { show; fail "condo exited $rc, want 0"; }
echo "$lines" | grep -q "ping=ok mac=$MAC" || { show; fail "ping or MAC wrong: $lines"; }
got_rx=$(echo "$lines" | sed -n "s/^$MARKER rx=//p")
[ "$got_rx" = "$RX_SUM" ] || { show; fail "RX: the guest got md5 $got_rx, the host sent $RX_SUM"; }
want_tx=$(echo "$lines" | sed -n "s/^$MARKER tx=//p")
exec 3>&-
wait_bounded "$NC_PID" 60 >/dev/null || true
got_tx="$(wc -c <"$CONDO_TEST_TMP/tx.received") $(md5sum <"$CONDO_TEST_TMP/tx.received" | cut -d' ' -f1)"
[ -n "$want_tx" ] && [ "$got_tx" = "$want_tx" ] || { show; fail "TX: the host got md5 '$got_tx', the guest sent '$want_tx'"; }
pass "ping, 2 MiB each way intact, MAC $MAC, jailed VMM; exec to exit ${took}s"
