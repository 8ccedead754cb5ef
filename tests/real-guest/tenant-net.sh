#!/bin/sh
# Tenant networking through the CLI: `condo tenant create --net` for two tenant microVMs,
# `condo run --network vm -p 8080:80` of busybox httpd (from an imported busybox image), and
# `condo run -p 8081:80` of one with a network namespace of its own (a routed veth to the VM):
# - the container answers on the host's port 8080, from outside (a network namespace behind
#   the host) and from the host itself; containers reach the outside through NAT;
# - tenant A's traffic to tenant B is dropped, the host still reaches B;
# - a spoofed source address from A is dropped on the host (its counter moves);
# - `condo rm` and `condo tenant rm` leave the ruleset, links, addresses and routes as before.
. "$(dirname "$0")/lib.sh"

require_kvm
[ "$(id -u)" = 0 ] || skip "tenants need root (the jailed VMM, taps, nftables)"
condo_can_boot || skip "condo cannot boot a guest yet ($CONDO_BIN_DIR/condo)"
"$CONDO_BIN_DIR/condo" tenant create --help 2>&1 | grep -q -- --net || skip "condo tenant create has no --net"
command -v mkfs.erofs >/dev/null 2>&1 || fail "no mkfs.erofs (erofs-utils; listed in host-tools)"
[ -c /dev/net/tun ] || { mkdir -p /dev/net && mknod /dev/net/tun c 10 200; } 2>/dev/null
IP=$(command -v /usr/sbin/ip || command -v /sbin/ip) || skip "no iproute2 ip (tests/real-guest/host-tools)"
NFT=$(command -v /usr/sbin/nft || command -v /sbin/nft) || skip "no nft (tests/real-guest/host-tools)"
export PATH="/usr/sbin:/sbin:$PATH"
"$NFT" list ruleset >/dev/null 2>&1 || skip "nftables does not work here"

condo_cli_env
dump() {
    dump_tenants 20
    note "ruleset:"; "$NFT" list ruleset
}
cleanup() {
    remove_tenants
    "$IP" netns del outside 2>/dev/null
    kill "$OUT_HTTPD" 2>/dev/null
}
trap cleanup EXIT

# The outside world: 192.0.2.2 in a namespace, the host at 192.0.2.1.
"$IP" netns add outside || fail "ip netns add"
"$IP" link add out0 type veth peer name eth0 netns outside || fail "veth to outside"
"$IP" addr add 192.0.2.1/24 dev out0 && "$IP" link set out0 up
"$IP" -n outside addr add 192.0.2.2/24 dev eth0 && "$IP" -n outside link set eth0 up
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

rootfs=$T/rootfs
busybox=$(static_busybox)
mkdir -p "$rootfs/bin" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/etc" "$rootfs/tmp"
cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
    [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
done
condo image import "$rootfs" --name busybox >"$T/import.out" 2>&1 ||
    { cat "$T/import.out"; fail "condo image import failed"; }

for t in a b; do
    condo tenant create --net --dns 192.0.2.53 --image busybox --memory 256m "tenant-$t" \
        >"$T/create-$t.out" 2>&1 || { cat "$T/create-$t.out"; dump; fail "tenant create tenant-$t --net failed"; }
done
# The guest's address from the tenant's network index (10.231.0.0/16, a /28 each, guest = +2).
guest_ip() {
    i=$(tr -d ' \n' <"$CONDO_RUN_DIR/tenants/$1/config.json" | sed -n 's/.*"net":{"index":\([0-9]*\).*/\1/p')
    [ -n "$i" ] || fail "no network index in $1's config.json"
    echo "10.231.$((i * 16 / 256)).$((i * 16 % 256 + 2))"
}
A_IP=$(guest_ip tenant-a) B_IP=$(guest_ip tenant-b)
A_INDEX=$(tr -d ' \n' <"$CONDO_RUN_DIR/tenants/tenant-a/config.json" | sed -n 's/.*"net":{"index":\([0-9]*\).*/\1/p')
note "tenant-a guest $A_IP, tenant-b guest $B_IP"

serve() { # TENANT NAME TEXT [FLAGS...]
    tenant=$1 name=$2 text=$3
    shift 3
    condo run -d --tenant "$tenant" --name "$name" "$@" busybox sh -c \
        "mkdir -p /tmp/www && echo $text >/tmp/www/index.html && exec httpd -f -p 80 -h /tmp/www" \
        >"$T/$name.out" 2>&1 || { cat "$T/$name.out"; dump; fail "condo run $name failed"; }
}
serve tenant-a web-a served-by-a --network vm -p 8080:80
serve tenant-b web-b served-by-b --network vm
# A container with a network namespace of its own (the default): a veth to the VM, its own
# address in the tenant's block, and the host's port 8081 forwarded to it.
serve tenant-a web-own served-by-own -p 8081:80
fetch() { # URL [netns]: bounded retries while the container starts
    i=0
    while :; do
        if [ -n "$2" ]; then got=$("$IP" netns exec "$2" timeout 5 wget -q -O - "$1" 2>/dev/null)
        else got=$(timeout 5 wget -q -O - "$1" 2>/dev/null); fi
        [ -n "$got" ] && { echo "$got"; return 0; }
        i=$((i + 1)); [ $i -lt 40 ] || return 1
        sleep 0.5
    done
}
got=$(fetch http://192.0.2.1:8080/ outside) || { dump; fail "published port 8080 not reachable from outside"; }
[ "$got" = served-by-a ] || fail "published port from outside: got '$got'"
got=$(fetch http://192.0.2.1:8080/) || fail "published port 8080 not reachable from the host"
[ "$got" = served-by-a ] || fail "published port from the host: got '$got'"
got=$(fetch http://192.0.2.1:8081/ outside) || { dump; fail "published port 8081 (own netns) not reachable"; }
[ "$got" = served-by-own ] || fail "published port 8081 from outside: got '$got'"
got=$(fetch "http://$B_IP:80/") || fail "the host cannot reach tenant-b's guest"
[ "$got" = served-by-b ] || fail "host to tenant-b: got '$got'"

# From inside tenant A (containers sharing the VM's network). URLs name their port: static
# busybox's wget cannot look services up.
in_a() { condo run --tenant tenant-a --rm --network vm "$@"; }
out=$(in_a busybox sh -c 'timeout 10 wget -q -O - http://192.0.2.2:80/nat.txt || echo failed' 2>&1)
[ "$out" = nat-ok ] || { dump; fail "outbound NAT from tenant-a: '$out'"; }
out=$(in_a busybox sh -c "timeout 3 wget -q -O - http://$B_IP:80/ && echo REACHED || echo blocked" 2>&1)
# (busybox timeout's kill makes the shell say "Terminated" too, before or after)
blocked() { case "$1" in *REACHED*) return 1 ;; *blocked*) return 0 ;; *) return 1 ;; esac; }
blocked "$out" || fail "tenant-a reached tenant-b: '$out'"
counter() { "$NFT" list chain inet condo "$1" | grep -F "$2" | sed -n 's/.*packets \([0-9]*\).*/\1/p'; }
[ "$(counter "t${A_INDEX}_in" "ip daddr @tenant_nets")" -gt 0 ] || fail "the host's A->B rule counted nothing"
out=$(in_a --cap-add NET_ADMIN busybox sh -c "ip addr add $B_IP/32 dev eth0 &&
    { ping -c 2 -W 2 -I $B_IP 192.0.2.2 >/dev/null && echo REACHED || echo blocked; }; ip addr del $B_IP/32 dev eth0" 2>&1)
blocked "$out" || fail "a spoofed source from tenant-a: '$out'"
[ "$(counter "t${A_INDEX}_in" "ip saddr !=")" -gt 0 ] || fail "the host's anti-spoofing rule counted nothing"

condo rm -f web-a >/dev/null 2>&1 || fail "condo rm web-a"
"$NFT" list map inet condo ports_tcp | grep -q 8080 && fail "port 8080 is still published after condo rm"
"$NFT" list map inet condo ports_tcp | grep -q 8081 || fail "port 8081 went with the other container"
condo tenant rm --force tenant-a tenant-b >"$T/rm.out" 2>&1 || { cat "$T/rm.out"; fail "tenant rm"; }
snapshot >"$T/after"
if ! cmp -s "$T/before" "$T/after"; then
    diff "$T/before" "$T/after"
    fail "tenant rm left something behind"
fi
pass "published ports (VM network and own netns) from outside and host, NAT, A->B dropped, spoofed source dropped, nothing left"
