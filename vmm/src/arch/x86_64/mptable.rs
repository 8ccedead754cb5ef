//! Intel MultiProcessor Specification 1.4 table: how a Linux guest without ACPI finds its
//! CPUs, IO-APIC and interrupt routing.

use super::layout::{IOAPIC_ADDR, LAPIC_ADDR};

const MPC_SPEC: u8 = 4;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
/// CPU signature and features as real firmware reports for a family 6 CPU with FPU and APIC.
const CPU_STEPPING: u32 = 0x600;
const CPU_FEATURE_APIC: u32 = 0x200;
const CPU_FEATURE_FPU: u32 = 0x001;
/// Legacy ISA interrupts routed through the IO-APIC.
const IOAPIC_PINS: u8 = 24;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_INTSRC: u8 = 3;
const ENTRY_LINTSRC: u8 = 4;
const MP_INT: u8 = 0;
const MP_NMI: u8 = 1;
const MP_EXTINT: u8 = 3;

/// Size of the floating pointer structure and of the configuration table header.
const FLOATING_POINTER_LEN: usize = 16;
const TABLE_HEADER_LEN: usize = 44;

/// Builds the floating pointer and configuration table for `num_cpus` CPUs (APIC ids
/// 0..num_cpus) as it must sit at guest physical address `base`.
pub fn mptable_bytes(num_cpus: u8, base: u64) -> Vec<u8> {
    let table_addr = base + FLOATING_POINTER_LEN as u64;
    let ioapic_id = num_cpus.saturating_add(1);
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for cpu in 0..num_cpus {
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BOOTPROCESSOR } else { 0 };
        entries.extend_from_slice(&[ENTRY_PROCESSOR, cpu, APIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_STEPPING.to_le_bytes());
        entries.extend_from_slice(&(CPU_FEATURE_APIC | CPU_FEATURE_FPU).to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, 0, b'I', b'S', b'A', b' ', b' ', b' ']);
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 2;
    for irq in 0..IOAPIC_PINS {
        entries.extend_from_slice(&[ENTRY_INTSRC, MP_INT, 0, 0, 0, irq, ioapic_id, irq]);
        count += 1;
    }
    // LINT0 carries the legacy PIC (ExtINT), LINT1 the NMI, on every local APIC.
    entries.extend_from_slice(&[ENTRY_LINTSRC, MP_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[ENTRY_LINTSRC, MP_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let table_len = TABLE_HEADER_LEN + entries.len();
    let mut table = Vec::with_capacity(table_len);
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&(table_len as u16).to_le_bytes());
    table.extend_from_slice(&[MPC_SPEC, 0]); // checksum filled below
    table.extend_from_slice(b"CONDO   ");
    table.extend_from_slice(b"MICROVM     ");
    table.extend_from_slice(&0u32.to_le_bytes()); // no OEM table
    table.extend_from_slice(&0u16.to_le_bytes());
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    table.extend_from_slice(&0u32.to_le_bytes());
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut out = Vec::with_capacity(FLOATING_POINTER_LEN + table_len);
    out.extend_from_slice(b"_MP_");
    out.extend_from_slice(&(table_addr as u32).to_le_bytes());
    out.extend_from_slice(&[1, MPC_SPEC, 0, 0, 0, 0, 0, 0]); // length in 16-byte units
    out[10] = checksum(&out);
    out.extend_from_slice(&table);
    out
}

/// The byte that makes the sum of `bytes` zero (modulo 256).
fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, b| sum.wrapping_add(*b))
        .wrapping_neg()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    fn processors(table: &[u8]) -> Vec<(u8, u8)> {
        let mut cpus = Vec::new();
        let mut at = FLOATING_POINTER_LEN + TABLE_HEADER_LEN;
        while at < table.len() {
            if table[at] == ENTRY_PROCESSOR {
                cpus.push((table[at + 1], table[at + 3]));
                at += 20;
            } else {
                at += 8;
            }
        }
        cpus
    }

    #[test]
    fn checksums_are_valid() {
        for cpus in [1u8, 2, 32] {
            let bytes = mptable_bytes(cpus, 0x9fc00);
            assert_eq!(sum(&bytes[..16]), 0, "floating pointer, {cpus} cpus");
            assert_eq!(sum(&bytes[16..]), 0, "config table, {cpus} cpus");
        }
    }

    #[test]
    fn floating_pointer_points_to_table() {
        let bytes = mptable_bytes(2, 0x9fc00);
        assert_eq!(&bytes[..4], b"_MP_");
        assert_eq!(
            u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            0x9fc10
        );
        assert_eq!(&bytes[16..20], b"PCMP");
        let len = u16::from_le_bytes([bytes[20], bytes[21]]) as usize;
        assert_eq!(len, bytes.len() - 16);
    }

    #[test]
    fn lists_every_cpu_with_one_boot_processor() {
        let bytes = mptable_bytes(4, 0x9fc00);
        let cpus = processors(&bytes);
        assert_eq!(cpus.len(), 4);
        assert_eq!(cpus[0], (0, CPU_ENABLED | CPU_BOOTPROCESSOR));
        assert!(cpus[1..].iter().all(|c| c.1 == CPU_ENABLED));
        let count = u16::from_le_bytes([bytes[16 + 34], bytes[16 + 35]]);
        assert_eq!(count, 4 + 2 + 24 + 2);
    }

    #[test]
    fn largest_table_fits_below_640k() {
        assert!(0x9fc00 + mptable_bytes(32, 0x9fc00).len() <= 0xa0000);
    }
}
