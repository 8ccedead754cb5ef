//! CPUID for a guest vCPU: KVM's supported set, with the topology made to match the VM
//! (one socket, one thread per core), the hypervisor bit set, and features a guest cannot
//! use here hidden.

use kvm_bindings::kvm_cpuid_entry2;

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_THERMAL_POWER: u32 = 0x6;
const LEAF_PERFMON: u32 = 0xa;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_AMD_SIZES: u32 = 0x8000_0008;

const ECX_MONITOR: u32 = 1 << 3; // MONITOR/MWAIT: not virtualized, idle via HLT
const ECX_TSC_DEADLINE: u32 = 1 << 24;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
const TOPOLOGY_LEVEL_SMT: u32 = 1;
const TOPOLOGY_LEVEL_CORE: u32 = 2;

/// What the filter needs to know about the vCPU it prepares.
#[derive(Clone, Copy, Debug)]
pub struct VcpuTopology {
    /// This vCPU's index, which is also its APIC id.
    pub cpu_id: u8,
    /// Number of vCPUs in the VM.
    pub cpu_count: u8,
    /// Whether KVM can emulate the TSC deadline timer (KVM_CAP_TSC_DEADLINE_TIMER).
    pub tsc_deadline: bool,
}

/// Bits needed to number `count` cores in an APIC id.
fn core_id_bits(count: u8) -> u32 {
    u32::from(count.max(1)).next_power_of_two().trailing_zeros()
}

/// Adjusts KVM's supported CPUID entries in place for one vCPU.
pub fn filter_cpuid(entries: &mut [kvm_cpuid_entry2], topo: VcpuTopology) {
    let apic_id = u32::from(topo.cpu_id);
    let count = u32::from(topo.cpu_count.max(1));
    for entry in entries.iter_mut() {
        match entry.function {
            LEAF_FEATURES => {
                // EBX: APIC id [31:24], logical processors per package [23:16], CLFLUSH size.
                entry.ebx = (apic_id << 24) | (count << 16) | (entry.ebx & 0xffff);
                entry.ecx |= ECX_HYPERVISOR;
                entry.ecx &= !ECX_MONITOR;
                if topo.tsc_deadline {
                    entry.ecx |= ECX_TSC_DEADLINE;
                } else {
                    entry.ecx &= !ECX_TSC_DEADLINE;
                }
                if count > 1 {
                    entry.edx |= EDX_HTT;
                } else {
                    entry.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE_PARAMS => {
                // Cores per package - 1 in [31:26]; each cache shared by one thread only.
                entry.eax = (entry.eax & 0x3fff) | ((count - 1) << 26);
            }
            LEAF_THERMAL_POWER => {
                // Only "APIC timer always running" is meaningful in a VM.
                entry.eax &= 1 << 2;
                entry.ebx = 0;
                entry.ecx = 0;
                entry.edx = 0;
            }
            LEAF_PERFMON => {
                // No virtual PMU is set up.
                entry.eax = 0;
                entry.ebx = 0;
                entry.ecx = 0;
                entry.edx = 0;
            }
            LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => topology_level(entry, apic_id, count),
            LEAF_AMD_SIZES => {
                // AMD: number of cores - 1 in ECX[7:0], core id size in [15:12].
                entry.ecx = (core_id_bits(topo.cpu_count) << 12) | (count - 1);
            }
            _ => {}
        }
    }
}

fn topology_level(entry: &mut kvm_cpuid_entry2, apic_id: u32, count: u32) {
    entry.edx = apic_id;
    match entry.index {
        0 => {
            entry.eax = 0; // one thread per core
            entry.ebx = 1;
            entry.ecx = (TOPOLOGY_LEVEL_SMT << 8) | entry.index;
        }
        1 => {
            entry.eax = core_id_bits(count as u8);
            entry.ebx = count;
            entry.ecx = (TOPOLOGY_LEVEL_CORE << 8) | entry.index;
        }
        _ => {
            entry.eax = 0;
            entry.ebx = 0;
            entry.ecx = entry.index; // level type 0: end of the list
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: 0xffff_ffff,
            ebx: 0xffff_ffff,
            ecx: 0xffff_ffff,
            edx: 0xffff_ffff,
            ..Default::default()
        }
    }

    fn topo(cpu_id: u8, cpu_count: u8) -> VcpuTopology {
        VcpuTopology {
            cpu_id,
            cpu_count,
            tsc_deadline: false,
        }
    }

    #[test]
    fn leaf1_has_apic_id_count_and_hypervisor_bit() {
        let mut e = [entry(1, 0)];
        e[0].ecx = 0;
        e[0].edx = 0;
        filter_cpuid(&mut e, topo(3, 4));
        assert_eq!(e[0].ebx >> 24, 3);
        assert_eq!((e[0].ebx >> 16) & 0xff, 4);
        assert_eq!(e[0].ebx & 0xffff, 0xffff);
        assert_ne!(e[0].ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e[0].edx & EDX_HTT, 0);
    }

    #[test]
    fn single_cpu_has_no_htt_and_no_monitor() {
        let mut e = [entry(1, 0)];
        filter_cpuid(&mut e, topo(0, 1));
        assert_eq!(e[0].edx & EDX_HTT, 0);
        assert_eq!(e[0].ecx & ECX_MONITOR, 0);
        assert_eq!(e[0].ecx & ECX_TSC_DEADLINE, 0);
    }

    #[test]
    fn tsc_deadline_follows_kvm_capability() {
        let mut e = [entry(1, 0)];
        e[0].ecx = 0;
        filter_cpuid(
            &mut e,
            VcpuTopology {
                cpu_id: 0,
                cpu_count: 1,
                tsc_deadline: true,
            },
        );
        assert_ne!(e[0].ecx & ECX_TSC_DEADLINE, 0);
    }

    #[test]
    fn extended_topology_describes_cores() {
        let mut e = [entry(0xb, 0), entry(0xb, 1), entry(0xb, 2)];
        filter_cpuid(&mut e, topo(5, 6));
        assert_eq!((e[0].ebx, e[0].ecx >> 8), (1, TOPOLOGY_LEVEL_SMT));
        assert_eq!(
            (e[1].eax, e[1].ebx, e[1].ecx >> 8),
            (3, 6, TOPOLOGY_LEVEL_CORE)
        );
        assert_eq!((e[2].ebx, e[2].ecx), (0, 2));
        assert!(e.iter().all(|l| l.edx == 5));
    }

    #[test]
    fn cache_leaf_and_pmu() {
        let mut e = [entry(4, 0), entry(0xa, 0), entry(6, 0)];
        filter_cpuid(&mut e, topo(0, 2));
        assert_eq!(e[0].eax >> 26, 1);
        assert_eq!(e[0].eax & 0x3fff, 0x3fff);
        assert_eq!((e[1].eax, e[1].ebx, e[1].ecx, e[1].edx), (0, 0, 0, 0));
        assert_eq!(e[2].eax, 1 << 2);
    }

    #[test]
    fn amd_core_count() {
        let mut e = [entry(0x8000_0008, 0)];
        filter_cpuid(&mut e, topo(0, 32));
        assert_eq!(e[0].ecx, (5 << 12) | 31);
    }

    #[test]
    fn other_leaves_untouched() {
        let mut e = [entry(0x7, 0)];
        filter_cpuid(&mut e, topo(0, 2));
        assert_eq!(e[0].ebx, 0xffff_ffff);
    }
}
