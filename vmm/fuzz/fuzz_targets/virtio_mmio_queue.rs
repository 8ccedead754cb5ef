//! The virtio-mmio transport and the queue loop under an arbitrary driver: the input is a
//! list of MMIO accesses (any offset, width and value, queue notifications, queue runs)
//! followed by the guest memory contents (rings, descriptors, requests), with a virtio-blk
//! device behind the transport.

#![no_main]

mod common;

use std::sync::{Arc, Mutex};

use condo_vmm::devices::virtio::block::Block;
use condo_vmm::devices::virtio::{Interrupt, MmioTransport};
use libfuzzer_sys::fuzz_target;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use common::{disk, guest_memory, Input};

const MAX_OPS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let read_only = input.u8() & 1 == 1;
    let ops = usize::from(input.u8()) % MAX_OPS;
    let mut script = Vec::with_capacity(ops);
    for _ in 0..ops {
        script.push((input.u8(), input.u16(), input.u32()));
    }
    let mem = guest_memory(input.rest());
    let block = Arc::new(Mutex::new(Block::new(disk(read_only)).unwrap()));
    let interrupt = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    let mut transport = MmioTransport::new(block.clone(), mem, interrupt).unwrap();
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
