//! memprof's kernel programs. Each file holds one concern:
//! `rss.rs` follows per-process RSS on `rss_stat` and reports armed crossings,
//! `lifecycle.rs` forgets processes on exec and exit, `oom.rs` reports OOM-killer victims,
//! `listing.rs` lists the processes for the safety net, `goheap.rs` walks a Go victim's heap
//! profile when its SIGKILL arrives, `procs.rs` admits processes and reports crossings,
//! `task.rs` resolves a task's tgid, its tenant and its memory cgroup, `emit.rs` hands events
//! to the tenant's own programs (shared programs).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// `lock xadd` (maps::add) is written as inline assembly.
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

#[cfg(target_arch = "bpf")]
mod emit;
#[cfg(target_arch = "bpf")]
mod goheap;
#[cfg(target_arch = "bpf")]
mod gostats;
#[cfg(target_arch = "bpf")]
mod lifecycle;
#[cfg(target_arch = "bpf")]
mod listing;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod oom;
#[cfg(target_arch = "bpf")]
mod procs;
#[cfg(target_arch = "bpf")]
mod rss;
#[cfg(target_arch = "bpf")]
mod task;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

/// The programs only exist for the BPF target; this lets `cargo test --workspace` build the
/// crate on the host.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
