//! x86_64 specifics: memory layout, CPUID, MSRs, registers, MP table, boot information.

pub mod boot_params;
pub mod cpuid;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod regs;
