#!/bin/sh
# Builds the tiny 64-bit test payloads (static ELF, loaded at 1 MiB) with GNU as and ld.
# Usage: build.sh OUT_DIR     Needs: binutils.
set -eu
src=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUT_DIR}
mkdir -p "$out"
for s in "$src"/*.S; do
    name=$(basename "$s" .S)
    as --64 -I "$src" -o "$out/$name.o" "$s"
    ld -m elf_x86_64 -static -nostdlib -n -z noexecstack --build-id=none --no-warn-rwx-segments -T "$src/payload.ld" \
        -o "$out/$name.elf" "$out/$name.o"
    rm -f "$out/$name.o"
done
