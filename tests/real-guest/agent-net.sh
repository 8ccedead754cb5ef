#!/bin/sh
# The guest side of tenant networking: condo-agent as PID 1 configures eth0 from
# condo.net=ADDR/PREFIX,GW,DNS (written by `condo net up`) and /etc/resolv.conf; a container
# sharing the VM's network (ctl run --network vm) serves HTTP with busybox httpd, and the host
# reaches it through a published port; a container with its own network namespace has an
# eth0 of its own (a routed veth to the VM) and reaches the host through the VM. The VMM is
# condo's, jailed, on the tap `condo net up` made.
. "$(dirname "$0")/lib.sh"

require_kvm
agent=$CONDO_BIN_DIR/condo-agent CONDO="$CONDO_BIN_DIR/condo"
[ -x "$agent" ] || fail "no static condo-agent at $agent"
"$CONDO" net --help >/dev/null 2>&1 || skip "condo has no net command"
"$agent" ctl run --help 2>&1 | grep -q -- --network || skip "condo-agent ctl run has no --network"
[ -c /dev/net/tun ] || { mkdir -p /dev/net && mknod /dev/net/tun c 10 200; } 2>/dev/null
[ -c /dev/net/tun ] || skip "no /dev/net/tun (tun module missing)"
NFT=$(command -v /usr/sbin/nft || command -v /sbin/nft) || skip "no nft (tests/real-guest/host-tools)"
export PATH="/usr/sbin:/sbin:$PATH"
"$NFT" list ruleset >/dev/null 2>&1 || skip "nftables does not work here"
T=$CONDO_TEST_TMP
VM_PID=
cleanup() { [ -n "$VM_PID" ] && kill "$VM_PID" 2>/dev/null; "$CONDO" net down --index 3 >/dev/null 2>&1; }
trap cleanup EXIT

"$CONDO" net up --index 3 --dns 192.0.2.53 >"$T/net" || fail "condo net up"
field() { sed -n "1s/.*$1=\([^ ]*\).*/\1/p" "$T/net"; }
TAP=$(field tap) MAC=$(field mac) GUEST=$(field guest) GW=$(field gateway)
NET_PARAM=$(sed -n 2p "$T/net")
"$CONDO" net publish --index 3 -p 8080:80 || fail "condo net publish"

busybox=$(static_busybox)
rootfs=$T/rootfs
mkdir -p "$rootfs/bin" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/etc" "$rootfs/tmp" "$rootfs/www"
cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
    [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
done
echo "root:x:0:0:root:/root:/bin/sh" >"$rootfs/etc/passwd"
echo "root:x:0:" >"$rootfs/etc/group"
nonce="agent-net-$$"
echo "served-by-a-container-$nonce" >"$rootfs/www/index.html"

sock=/run/condo/agent.sock
cat >"$T/client.sh" <<CLIENT
export PATH=/bin
mark() { echo "@@\$*@@ $nonce"; }
ctl="/bin/condo-agent ctl --target unix:$sock"
\$ctl --wait 60 ping >/dev/null; mark "ping rc=\$?"
mark "resolv=\$(/bin/busybox cat /etc/resolv.conf)"
\$ctl run --rootfs /rootfs --id own -- sh -c 'ls /sys/class/net | tr "\\n" " "; ip -4 -o addr show dev eth0 | cut -d" " -f7; ping -c 1 -W 5 $GW >/dev/null && echo ping-ok || echo ping-failed' >/tmp/own.out 2>&1
mark "own-netns=\$(/bin/busybox cat /tmp/own.out | /bin/busybox tr "\\n" " ")"
mark "serving"
\$ctl run --rootfs /rootfs --id web --network vm -- httpd -f -p 80 -h /www
mark "web exited rc=\$?"
CLIENT
cat >"$T/init" <<INIT
#!/bin/busybox sh
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
make_initramfs "$T/agent.cpio.gz" "$T/init" \
    "$agent:/bin/condo-agent" "$T/client.sh:/client.sh" "$rootfs:/rootfs"

log=$T/console.log
: >"$log"
"$CONDO" vm run --kernel "$CONDO_KERNEL_DIR/vmlinux" --initrd "$T/agent.cpio.gz" --memory 256 \
    --net "tap=$TAP,mac=$MAC" --console "$log" \
    --cmdline "console=ttyS0 reboot=k panic=-1 quiet condo.unix=$sock $NET_PARAM" \
    </dev/null >"$log.vmm" 2>&1 &
VM_PID=$!
marker() { tr -d '\r' <"$log" | sed -n "s/^@@\(.*\)@@ $nonce\$/\1/p"; }
show() { note "guest console:"; tail -n 40 "$log"; note "condo:"; cat "$log.vmm"; }
i=0
until marker | grep -qx serving; do
    i=$((i + 1))
    [ $i -lt 600 ] || { show; fail "the guest did not get to serving within 300 s"; }
    kill -0 "$VM_PID" 2>/dev/null || { show; fail "condo exited early"; }
    sleep 0.5
done
marker | grep -qx "ping rc=0" || { show; fail "the agent did not answer"; }
tr -d '\r' <"$log" | grep -q "eth0: $GUEST/30 via $GW" || { show; fail "the agent did not report eth0's setup"; }
marker | grep -qx "resolv=nameserver 192.0.2.53" || { show; fail "no resolv.conf with the DNS given"; }
own=$(marker | sed -n 's/^own-netns=//p')
# Its own namespace: its own eth0 (a veth to the VM) with an address of the tenant's block, and
# the host's gateway answers its ping through the VM.
case "$own" in "eth0 lo 10.231.0."*"/32 ping-ok"*) ;; *) show; fail "own-netns container: '$own'" ;; esac
# The web container may take a moment to bind: retry (bounded).
i=0
until got=$(timeout 5 wget -q -O - "http://$GW:8080/" 2>/dev/null) && [ -n "$got" ]; do
    i=$((i + 1))
    [ $i -lt 60 ] || { show; fail "the published port never answered"; }
    sleep 0.5
done
[ "$got" = "served-by-a-container-$nonce" ] || fail "published port: got '$got'"
stop_bounded "$VM_PID"; VM_PID=
"$CONDO" net down --index 3 || fail "condo net down"
pass "agent configured eth0 ($GUEST via $GW) and resolv.conf; a --network vm container's httpd answered on host port 8080; an own-netns container: $own"
