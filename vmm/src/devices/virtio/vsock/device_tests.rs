//! Queue processing with a mock driver (no KVM).
