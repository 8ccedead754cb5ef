#!/bin/sh
# Tenant networking at the VMM and `condo net` level (tests/real-guest/tenant-net.sh does it
# through the tenant CLI): two tenants' VMs (condo vm run --net on the taps `condo net up`
# made), an "outside" network namespace behind the host. Checks: outbound NAT from a
# guest; a published port reaches tenant A's httpd from outside and from the host; A cannot
# reach B; a spoofed source IP or MAC from A is dropped on the host; `condo net down` leaves
# the ruleset, links, addresses and routes as they were.
. "$(dirname "$0")/lib.sh"

require_kvm
[ -x "$CONDO_BIN_DIR/condo" ] || fail "no condo binary in CONDO_BIN_DIR=$CONDO_BIN_DIR"
"$CONDO_BIN_DIR/condo" net --help >/dev/null 2>&1 || skip "condo has no net command"
[ -c /dev/net/tun ] || { mkdir -p /dev/net && mknod /dev/net/tun c 10 200; } 2>/dev/null
[ -c /dev/net/tun ] || skip "no /dev/net/tun (tun module missing)"
# iproute2 and nftables by path (busybox sh prefers its own applets); condo finds them on PATH.
IP=$(command -v /usr/sbin/ip || command -v /sbin/ip) || skip "no iproute2 ip (tests/real-guest/host-tools)"
NFT=$(command -v /usr/sbin/nft || command -v /sbin/nft) || skip "no nft (tests/real-guest/host-tools)"
export PATH="/usr/sbin:/sbin:$PATH"
"$NFT" list ruleset >/dev/null 2>&1 || skip "nftables does not work here (nf_tables module missing?)"
CONDO="$CONDO_BIN_DIR/condo"
T=$CONDO_TEST_TMP

A_PID= B_PID=
cleanup() {
    for p in $A_PID $B_PID; do kill "$p" 2>/dev/null; done
    "$CONDO" net down --index 1 >/dev/null 2>&1
    "$CONDO" net down --index 2 >/dev/null 2>&1
    "$IP" netns del outside 2>/dev/null
    kill "$OUT_HTTPD" 2>/dev/null
}
trap cleanup EXIT

# The outside world: 192.0.2.2 in its own namespace, the host at 192.0.2.1.
"$IP" netns add outside || fail "ip netns add"
"$IP" link add out0 type veth peer name eth0 netns outside || fail "veth to outside"
"$IP" addr add 192.0.2.1/24 dev out0 && "$IP" link set out0 up
"$IP" -n outside addr add 192.0.2.2/24 dev eth0 && "$IP" -n outside link set eth0 up
"$IP" -n outside link set lo up
mkdir -p "$T/outside" && echo nat-ok >"$T/outside/nat.txt"
"$IP" netns exec outside httpd -f -p 192.0.2.2:80 -h "$T/outside" &
OUT_HTTPD=$!

snapshot() {
    "$NFT" list ruleset
    echo ---; "$IP" -o link show | sed 's/ state [A-Z]* / /'
    echo ---; "$IP" -4 -o addr show
    echo ---; "$IP" route show
}
snapshot >"$T/before"

"$CONDO" net up --index 1 >"$T/a.net" || fail "condo net up --index 1"
"$CONDO" net up --index 2 >"$T/b.net" || fail "condo net up --index 2"
field() { sed -n "1s/.*$2=\([^ ]*\).*/\1/p" "$1"; }
A_TAP=$(field "$T/a.net" tap) A_MAC=$(field "$T/a.net" mac) A_IP=$(field "$T/a.net" guest) A_GW=$(field "$T/a.net" gateway)
B_TAP=$(field "$T/b.net" tap) B_MAC=$(field "$T/b.net" mac) B_IP=$(field "$T/b.net" guest) B_GW=$(field "$T/b.net" gateway)
note "tenant A: $A_TAP $A_MAC $A_IP via $A_GW; tenant B: $B_TAP $B_MAC $B_IP via $B_GW"
"$CONDO" net publish --index 1 -p 8080:80 || fail "condo net publish"

MARKER="condo-tenant-net-$$"
# guest_init FILE NAME ADDR GW CHECKS: busybox init that serves "NAME-page" on :80, runs CHECKS,
# prints "$MARKER NAME ready" and idles until the host stops the VM. URLs name their port:
# static busybox's wget crashes looking the "http" service up without NSS libraries, and
# with -T: `timeout` bounds it instead.
guest_init() {
    cat >"$1" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs dev /dev
ip link set lo up; ip link set eth0 up
ip addr add $3/30 dev eth0 && ip route add default via $4
mkdir -p /www && echo $2-page >/www/index.html && httpd -p 80 -h /www
$5
echo "$MARKER $2 ready"
while :; do sleep 3600; done
INIT
}
guest_init "$T/b-init" b "$B_IP" "$B_GW" ""
guest_init "$T/a-init" a "$A_IP" "$A_GW" "
say() { echo \"$MARKER a \$*\"; }
say nat=\$(timeout 20 wget -q -O - http://192.0.2.2:80/nat.txt || echo failed)
timeout 3 wget -q -O /dev/null http://$B_IP:80/ && say a-to-b=REACHED || say a-to-b=blocked
ip addr add $B_IP/32 dev eth0
ping -c 2 -W 2 -I $B_IP 192.0.2.2 >/dev/null && say spoof-ip=REACHED || say spoof-ip=blocked
ip addr del $B_IP/32 dev eth0
# ifconfig: busybox's ip changes MACs through AF_PACKET, which the guest kernel lacks.
ifconfig eth0 hw ether 02:00:00:00:66:66 && say mac-now=\$(cat /sys/class/net/eth0/address)
timeout 3 wget -q -O /dev/null http://192.0.2.2:80/nat.txt && say spoof-mac=REACHED || say spoof-mac=blocked
ifconfig eth0 hw ether $A_MAC
# The host learnt the fake MAC from an ARP request: ARP again with the real one.
ip neigh flush dev eth0; ping -c 1 -W 3 $A_GW >/dev/null
"
make_initramfs "$T/a.cpio.gz" "$T/a-init"
make_initramfs "$T/b.cpio.gz" "$T/b-init"

boot() { # NAME TAP MAC: boots in the background, jailed
    "$CONDO" vm run --kernel "$CONDO_KERNEL_DIR/vmlinux" --initrd "$T/$1.cpio.gz" --memory 128 \
        --net "tap=$2,mac=$3" --cmdline "console=ttyS0 reboot=k panic=-1 quiet" \
        --console "$T/$1.console" </dev/null >"$T/$1.vmm" 2>&1 &
}
wait_ready() { # NAME: waits (up to 180 s) for the guest's ready marker
    i=0
    while ! { tr -d '\r' <"$T/$1.console" | grep -q "$MARKER $1 ready"; } 2>/dev/null; do
        i=$((i + 1))
        if [ "$i" -gt 360 ]; then
            note "$1 console:"; tail -n 30 "$T/$1.console"; cat "$T/$1.vmm"
            fail "guest $1 not ready after 180 s"
        fi
        sleep 0.5
    done
}
boot b "$B_TAP" "$B_MAC"; B_PID=$!
wait_ready b
boot a "$A_TAP" "$A_MAC"; A_PID=$!
wait_ready a

result() { tr -d '\r' <"$T/a.console" | sed -n "s/^$MARKER a $1=//p"; }
diagnose() {
    note "guest A said:"; tr -d '\r' <"$T/a.console" | grep "^$MARKER"
    note "ruleset:"; "$NFT" list ruleset
    note "neighbours:"; "$IP" neigh show
    note "routes:"; "$IP" route show; "$IP" -o addr show; sysctl net.ipv4.ip_forward
}
trap 'diagnose; cleanup' EXIT
[ "$(result nat)" = nat-ok ] || fail "outbound NAT: the guest got '$(result nat)'"
[ "$(result a-to-b)" = blocked ] || fail "tenant A reached tenant B"
[ "$(result spoof-ip)" = blocked ] || fail "a spoofed source IP left tenant A"
[ "$(result mac-now)" = 02:00:00:00:66:66 ] || fail "the guest could not change its MAC to test spoofing"
[ "$(result spoof-mac)" = blocked ] || fail "a spoofed source MAC left tenant A"
counter() { "$NFT" list chain inet condo "$1" | grep -F "$2" | sed -n 's/.*packets \([0-9]*\).*/\1/p'; }
for rule in "ip saddr !=" "ether saddr !=" "ip daddr @tenant_nets"; do
    n=$(counter t1_in "$rule")
    [ "${n:-0}" -gt 0 ] || fail "the host's rule '$rule' of tenant A dropped nothing"
done
got=$("$IP" netns exec outside timeout 10 wget -q -O - http://192.0.2.1:8080/) || true
[ "$got" = a-page ] || fail "published port from outside: got '$got'"
got=$(timeout 10 wget -q -O - http://192.0.2.1:8080/) || true
[ "$got" = a-page ] || fail "published port from the host: got '$got'"
got=$(timeout 10 wget -q -O - "http://$B_IP:80/") || true
[ "$got" = b-page ] || fail "the host cannot reach tenant B's guest: got '$got'"

trap cleanup EXIT
stop_bounded "$A_PID" "$B_PID"; A_PID= B_PID=
"$CONDO" net down --index 1 || fail "condo net down --index 1"
"$CONDO" net down --index 2 || fail "condo net down --index 2"
"$CONDO" net down --index 2 || fail "condo net down is not idempotent"
snapshot >"$T/after"
if ! cmp -s "$T/before" "$T/after"; then
    diff "$T/before" "$T/after"
    fail "removal left something behind"
fi
pass "NAT, published port (outside and host), A->B dropped, spoofed IP and MAC dropped, nothing left"
