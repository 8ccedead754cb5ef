//! Memory figures for benchmarks (`CONDO_VMM_STATS=1`): the VMM's peak resident memory and
//! how much of it is guest memory the guest (or the loader) touched, so the VMM's own
//! overhead can be told apart.

use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress};

/// Environment variable that turns the report on.
pub const STATS_ENV: &str = "CONDO_VMM_STATS";
const PAGE_SIZE: usize = 4096;

/// Whether the report was asked for.
pub fn enabled() -> bool {
    std::env::var(STATS_ENV).is_ok_and(|v| v == "1")
}

/// Resident bytes of guest memory (mincore over every region).
pub fn guest_resident_bytes(memory: &GuestMemoryMmap) -> u64 {
    let mut total = 0u64;
    for region in memory.iter() {
        let Ok(host) = region.get_host_address(MemoryRegionAddress(0)) else {
            continue;
        };
        let len = region.len() as usize;
        let mut pages = vec![0u8; len.div_ceil(PAGE_SIZE)];
        // SAFETY: `host..host+len` is one live mapping owned by `memory`; `pages` has one
        // byte per page of it, as mincore requires.
        let rc = unsafe { libc::mincore(host.cast(), len, pages.as_mut_ptr()) };
        if rc == 0 {
            total += pages.iter().filter(|p| *p & 1 != 0).count() as u64 * PAGE_SIZE as u64;
        }
    }
    total
}

/// A /proc/self/status field in KiB.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        line.strip_prefix(field)?
            .strip_prefix(':')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// The report line: peak RSS, guest-resident memory, and the difference (the VMM's own).
pub fn report(memory: &GuestMemoryMmap) -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status_kib(&status, "VmHWM").unwrap_or(0);
    let guest = guest_resident_bytes(memory) >> 10;
    format!(
        "condo-stats: vmm_peak_rss_kib={hwm} guest_resident_kib={guest} vmm_overhead_kib={}",
        hwm.saturating_sub(guest)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn counts_touched_guest_pages() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        assert_eq!(guest_resident_bytes(&mem), 0);
        mem.write_obj(1u8, GuestAddress(0)).unwrap();
        mem.write_obj(1u8, GuestAddress(0x5000)).unwrap();
        assert_eq!(guest_resident_bytes(&mem), 2 * 4096);
    }

    #[test]
    fn parses_status_fields() {
        assert_eq!(
            status_kib("VmPeak:\t 100 kB\nVmHWM:\t    2048 kB\n", "VmHWM"),
            Some(2048)
        );
        assert_eq!(status_kib("VmRSS: 1 kB\n", "VmHWM"), None);
    }
}
