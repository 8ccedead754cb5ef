//! The virtio-mmio transport and the queue loop under an arbitrary driver: the input is a
//! list of MMIO accesses (any offset, width and value, queue notifications, queue runs)
//! followed by the guest memory contents (rings, descriptors, requests), with a virtio-blk
//! device behind the transport. When the first byte says so, a well-behaved bring-up
//! (ACKNOWLEDGE .. DRIVER_OK with the input's queue size and ring addresses) runs first, so
//! the fuzzer spends its time on the queue loop as well as on the register state machine.

#![no_main]

mod common;

use std::sync::{Arc, Mutex};

use condo_vmm::devices::virtio::block::Block;
use condo_vmm::devices::virtio::mmio::{regs, status};
use condo_vmm::devices::virtio::{Interrupt, MmioTransport};
use libfuzzer_sys::fuzz_target;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use common::{disk, guest_memory, Input};

const MAX_OPS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let flags = input.u8();
    let read_only = flags & 1 == 1;
    let bring_up = flags & 2 == 2;
    let setup = [input.u32(), input.u16().into(), input.u16().into(), input.u16().into()];
    let ops = usize::from(input.u8()) % MAX_OPS;
    let mut script = Vec::with_capacity(ops);
    for _ in 0..ops {
        script.push((input.u8(), input.u16(), input.u32()));
    }
    let mem = guest_memory(input.rest());
    let block = Arc::new(Mutex::new(Block::new(disk(read_only)).unwrap()));
    let interrupt = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    let mut transport = MmioTransport::new(block.clone(), mem, interrupt).unwrap();
    if bring_up {
        let [size, desc, avail, used] = setup;
        let mut w = |offset: u64, value: u32| transport.write(offset, &value.to_le_bytes());
        let s = status::ACKNOWLEDGE | status::DRIVER;
        w(regs::STATUS, status::ACKNOWLEDGE);
        w(regs::STATUS, s);
        w(regs::DRIVER_FEATURES_SEL, 1);
        w(regs::DRIVER_FEATURES, 1 | (size >> 16)); // VERSION_1 and what the input adds
        w(regs::DRIVER_FEATURES_SEL, 0);
        w(regs::DRIVER_FEATURES, size);
        w(regs::STATUS, s | status::FEATURES_OK);
        w(regs::QUEUE_SEL, 0);
        w(regs::QUEUE_NUM, size & 0x1ff);
        w(regs::QUEUE_DESC_LOW, desc);
        w(regs::QUEUE_AVAIL_LOW, avail);
        w(regs::QUEUE_USED_LOW, used);
        w(regs::QUEUE_READY, 1);
        w(regs::STATUS, s | status::FEATURES_OK | status::DRIVER_OK);
        block.lock().unwrap().process_queue();
    }
    for (kind, offset, value) in script {
        // Offsets cover the registers, the config space and beyond the window.
        let offset = u64::from(offset) % 0x1100;
        let width = [1usize, 2, 4, 8][usize::from(kind >> 6)];
        match kind & 0x3 {
            0 => {
                let mut buf = [0u8; 8];
                transport.read(offset, &mut buf[..width]);
            }
            1 => transport.write(offset, &value.to_le_bytes().repeat(2)[..width]),
            // The common case, for progress: a 4-byte register write.
            2 => transport.write(offset & 0xfc, &value.to_le_bytes()),
            _ => {
                block.lock().unwrap().process_queue();
            }
        }
    }
    block.lock().unwrap().process_queue();
});
