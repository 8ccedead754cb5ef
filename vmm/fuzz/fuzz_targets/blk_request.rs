//! virtio-blk request parsing and execution: a well-placed, ready queue whose descriptor
//! table, available ring and buffers (headers, data, status) all come from the input.

#![no_main]

mod common;

use std::sync::Arc;

use condo_vmm::devices::virtio::block::Block;
use condo_vmm::devices::virtio::{ActivateContext, Interrupt, VirtioDevice};
use libfuzzer_sys::fuzz_target;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use common::{disk, guest_memory, Input};

// Layout of the queue in guest memory (the input fills these places).
const DESC: u64 = 0x0;
const AVAIL: u64 = 0x1000;
const USED: u64 = 0x2000;

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let read_only = input.u8() & 1 == 1;
    let size = 1u16 << (input.u8() % 9); // 1..=256
    let event_idx = input.u8() & 1 == 1;
    let mem = guest_memory(input.rest());
    let mut queue = Queue::new(256).unwrap();
    queue.set_size(size);
    queue.try_set_desc_table_address(GuestAddress(DESC)).unwrap();
    queue.try_set_avail_ring_address(GuestAddress(AVAIL)).unwrap();
    queue.try_set_used_ring_address(GuestAddress(USED)).unwrap();
    queue.set_event_idx(event_idx);
    queue.set_ready(true);
    let mut block = Block::new(disk(read_only)).unwrap();
    let interrupt = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    block
        .activate(ActivateContext {
            mem,
            queues: vec![queue],
            interrupt,
            acked_features: 0,
        })
        .unwrap();
    block.process_queue();
    block.process_queue();
});
