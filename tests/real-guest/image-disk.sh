#!/bin/sh
# An image imported with `condo image import` is a disk a tenant guest can mount:
# - a two-layer OCI layout is made here with busybox tar and sha256sum (layer 2 whites out a
#   file of layer 1 and adds another), imported into a scratch store;
# - condo vm run --disk <fs_path>,ro boots a guest whose /init mounts /dev/vda as erofs
#   read-only, checks the whiteout and the added file, runs the image's busybox in a chroot,
#   and resets the machine.
. "$(dirname "$0")/lib.sh"

require_kvm
[ "$(id -u)" = 0 ] || skip "the jailed VMM needs root"
condo_can_boot || skip "condo cannot boot a guest yet ($CONDO_BIN_DIR/condo)"
condo=$CONDO_BIN_DIR/condo
case "$("$condo" vm run --help 2>&1)" in *--disk*) ;; *) skip "condo vm run has no --disk" ;; esac
"$condo" image --help >/dev/null 2>&1 || skip "condo has no image command"
command -v mkfs.erofs >/dev/null 2>&1 || fail "no mkfs.erofs (erofs-utils; listed in host-tools)"

T=$CONDO_TEST_TMP
busybox=$(static_busybox)
marker="image-disk-$$"

# Layer 1: busybox, /etc/passwd, /etc/gone. Layer 2: a whiteout of /etc/gone, /etc/image-id.
mkdir -p "$T/l1/bin" "$T/l1/etc" "$T/l2/etc" "$T/layout/blobs/sha256"
cp "$busybox" "$T/l1/bin/busybox"
ln -s busybox "$T/l1/bin/sh"
echo "root:x:0:0:root:/root:/bin/sh" >"$T/l1/etc/passwd"
echo "lower layer" >"$T/l1/etc/gone"
: >"$T/l2/etc/.wh.gone"
echo "$marker" >"$T/l2/etc/image-id"
blob() { # FILE: moves it into the layout's blobs, sets DIGEST and SIZE
    DIGEST=sha256:$(sha256sum "$1" | cut -d' ' -f1)
    SIZE=$(wc -c <"$1" | tr -d ' ')
    mv "$1" "$T/layout/blobs/sha256/${DIGEST#sha256:}"
}
(cd "$T/l1" && tar -cf "$T/layer1.tar" .) || fail "tar of layer 1"
(cd "$T/l2" && tar -cf "$T/layer2.tar" .) || fail "tar of layer 2"
blob "$T/layer1.tar"; l1=$DIGEST l1_size=$SIZE
blob "$T/layer2.tar"; l2=$DIGEST l2_size=$SIZE
printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["%s","%s"]}}' \
    "$l1" "$l2" >"$T/config"
blob "$T/config"; config=$DIGEST config_size=$SIZE
layer='{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}'
printf "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"%s\",\"size\":%s},\"layers\":[$layer,$layer]}" \
    "$config" "$config_size" "$l1" "$l1_size" "$l2" "$l2_size" >"$T/manifest"
blob "$T/manifest"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s}]}' \
    "$DIGEST" "$SIZE" >"$T/layout/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$T/layout/oci-layout"

export CONDO_STATE_DIR="$T/state"
digest=$("$condo" image import "$T/layout" --name rg-image 2>"$T/import.err" | tail -n 1) ||
    { cat "$T/import.err"; fail "condo image import failed"; }
[ "$digest" = "$config" ] || fail "import printed '$digest', want the config digest $config"
fs_path=$CONDO_STATE_DIR/images/${digest#sha256:}/rootfs.erofs
[ -f "$fs_path" ] || { "$condo" image ls; fail "no erofs image at $fs_path"; }
note "imported $digest ($(wc -c <"$fs_path" | tr -d ' ') bytes)"

cat >"$T/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev
mkdir -p /image
if mount -t erofs -o ro /dev/vda /image; then
    id=\$(cat /image/etc/image-id)
    [ -e /image/etc/gone ] && gone=present || gone=absent
    out=\$(chroot /image /bin/sh -c 'echo from-the-image')
    echo "@@image id=\$id gone=\$gone chroot=\$out@@"
else
    echo "@@image mount failed@@"
fi
reboot -f
INIT
make_initramfs "$T/init.cpio.gz" "$T/init"

jail_cgroup=$(jail_cgroup_flag)
chmod 755 "$T"
log=$T/console.log
timeout -s KILL 240 "$condo" vm run --kernel "$CONDO_KERNEL_DIR/vmlinux" \
    --initrd "$T/init.cpio.gz" --cmdline "console=ttyS0 reboot=k panic=-1 quiet" \
    --memory 256 --console "$log" --disk "$fs_path,ro" \
    --jail-base "$T/jail" --jail-id "rg-image-$$" $jail_cgroup </dev/null >"$T/condo.out" 2>&1
rc=$?
result=$(tr -d '\r' <"$log" | grep -o '@@image [^@]*@@')
[ "$rc" = 0 ] || { cat "$T/condo.out"; tr -d '\r' <"$log" | tail -n 30; fail "condo vm run exited $rc"; }
[ "$result" = "@@image id=$marker gone=absent chroot=from-the-image@@" ] ||
    { tr -d '\r' <"$log" | tail -n 30; fail "guest saw '$result'"; }
pass "imported OCI image mounted as erofs from virtio-blk in the guest: layer 2's file, layer 1's file whited out, the image's busybox runs"
