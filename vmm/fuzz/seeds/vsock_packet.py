#!/usr/bin/env python3
"""Seed inputs for the vsock_packet fuzz target: queues laid out as the target expects, one
valid TX chain (a REQUEST, and an RW to port 1024, the header split over two descriptors) and
one writable RX buffer, so that libFuzzer starts from inputs that reach the muxer.
usage: seeds/vsock_packet.py DIR (scripts/fuzz runs it for the target's corpus)"""
import os
import struct
import sys

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
mem = bytearray(0x900)


def desc(at, addr, length, flags, nxt=0):
    struct.pack_into("<QIHH", mem, at, addr, length, flags, nxt)


# RX queue (descriptor table 0x000, available ring 0x100): a writable 0x100-byte buffer.
desc(0x000, 0x800, 0x100, 2)
struct.pack_into("<HHH", mem, 0x100, 0, 1, 0)
# TX queue (0x200, 0x300): header at 0x700 split over two descriptors, 5 bytes of payload.
desc(0x200, 0x700, 20, 1, 1)
desc(0x210, 0x714, 24 + 5, 0)
struct.pack_into("<HHH", mem, 0x300, 0, 1, 0)
mem[0x72C:0x731] = b"hello"
for name, port, op in (("request", 52, 1), ("rw", 1024, 5)):
    # src_cid, dst_cid, src_port, dst_port, len, type, op, flags, buf_alloc, fwd_cnt
    mem[0x700:0x72C] = struct.pack("<QQIIIHHIII", 3, 2, 1000, port, 5, 1, op, 0, 4096, 0)
    with open(os.path.join(out, f"seed-{name}"), "wb") as f:
        f.write(bytes([4, 4]) + bytes(mem))
