//! The heap profiler's variables in a Go binary without a symbol table (`-s`, or stripped by a
//! distribution): found by decoding the runtime functions that use them, which the line table
//! still names. The bucket list and the rate are each taken from two functions that must
//! agree, the cycle from one function that both reads it and takes its address, so a change
//! of code generation in a later release makes the binary unreadable rather than misread;
//! discovery then checks what was found against the file and the live process
//! (`discover::plausible`).
//!
//! amd64 code is decoded with `iced-x86`, arm64's `ADRP` pairs by `locate_arm64`.
use std::collections::HashSet;

use iced_x86::{Decoder, DecoderOptions, MemorySize, Mnemonic, OpKind};

use super::pclntab::Pclntab;

/// The runtime functions decoded: those that use the profiler's variables, and the one that
/// reads `runtime.memstats` (`memstats::locate`).
const WANTED: [&str; 8] = [
    "runtime.mProf_FlushLocked",
    "runtime.stkbucket",
    "runtime.mProf_Flush",
    "runtime.allocmcache",
    "runtime.profilealloc",
    "runtime.schedinit",
    "runtime.init",
    "runtime.readmemstats_m",
];
/// The largest function decoded (the runtime's are a few KiB; `mallocgc` is about 10).
const FUNC_MAX: u64 = 256 << 10;
/// Instructions between the read of `disableMemoryProfiling` and the write of the rate.
const FLAG_TO_RATE: usize = 8;

/// Link-time addresses of `runtime.mbuckets`, `mProfCycle`, `MemProfileRate` and, where found,
/// `disableMemoryProfiling`.
#[derive(Debug, PartialEq, Eq)]
pub struct Variables {
    pub mbuckets: u64,
    pub cycle: u64,
    pub rate: u64,
    pub disable: Option<u64>,
}

/// One instruction's reference to data at a PC-relative address.
#[derive(Clone, Copy, Debug)]
pub struct Ref {
    pub target: u64,
    /// Bytes read or written (0 for an address taken: `LEA`, `ADD` after `ADRP`).
    pub size: usize,
    pub store: bool,
    /// Its place among the function's instructions.
    pub index: usize,
}

/// The instruction sets whose code is decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Amd64,
    Arm64,
}

/// The runtime functions `WANTED` names, found in one pass over the line table, ready to be
/// decoded. `code(addr, len)`: the file's bytes at a link-time address.
pub struct Runtime<'a, C: Fn(u64, u64) -> Option<&'a [u8]>> {
    /// Address ranges (to the next function's entry); the first of a name the table repeats.
    funcs: Vec<(&'static str, (u64, u64))>,
    arch: Arch,
    code: C,
}

impl<'a, C: Fn(u64, u64) -> Option<&'a [u8]>> Runtime<'a, C> {
    pub fn new<D: AsRef<[u8]>>(tab: &Pclntab<D>, arch: Arch, code: C) -> Self {
        let mut funcs: Vec<(&'static str, (u64, u64))> = Vec::new();
        for i in 0..tab.len() {
            let Some(f) = tab.func(i) else { continue };
            let Some(&wanted) = tab
                .func_name(&f)
                .and_then(|n| WANTED.iter().find(|w| **w == n))
            else {
                continue;
            };
            if funcs.iter().any(|(n, _)| *n == wanted) {
                continue;
            }
            let next = tab.entry(i + 1).unwrap_or(0);
            if next > f.entry && next - f.entry <= FUNC_MAX {
                funcs.push((wanted, (f.entry, next)));
            }
        }
        Self { funcs, arch, code }
    }

    /// The data references of the runtime function `name` (one of `WANTED`).
    pub fn refs(&self, name: &str) -> Result<Vec<Ref>, String> {
        let &(entry, end) = self
            .funcs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, range)| range)
            .ok_or_else(|| format!("its line table has no {name}"))?;
        let bytes =
            (self.code)(entry, end - entry).ok_or_else(|| format!("{name} is not in the file"))?;
        Ok(match self.arch {
            Arch::Amd64 => references(bytes, entry),
            Arch::Arm64 => super::locate_arm64::references(bytes, entry),
        })
    }
}

/// The variables, or why they were not found.
pub fn variables<'a, C: Fn(u64, u64) -> Option<&'a [u8]>>(
    rt: &Runtime<'a, C>,
) -> Result<Variables, String> {
    let reads = |refs: &[Ref], size: usize| -> HashSet<u64> {
        refs.iter()
            .filter(|r| r.size == size && !r.store)
            .map(|r| r.target)
            .collect()
    };
    let flush = rt.refs("runtime.mProf_FlushLocked")?;
    let mbuckets = flush
        .iter()
        .find(|r| r.size == 8 && !r.store)
        .map(|r| r.target)
        .filter(|t| {
            rt.refs("runtime.stkbucket")
                .is_ok_and(|s| s.iter().any(|r| r.target == *t))
        })
        .ok_or("runtime.mProf_FlushLocked and runtime.stkbucket share no bucket list")?;
    let f = rt.refs("runtime.mProf_Flush")?;
    let taken: HashSet<u64> = f.iter().filter(|r| r.size == 0).map(|r| r.target).collect();
    let cycle = one(
        reads(&f, 4).intersection(&taken).copied(),
        "runtime.mProfCycle",
    )?;
    let rate = one(
        reads(&rt.refs("runtime.allocmcache")?, 8)
            .intersection(&reads(&rt.refs("runtime.profilealloc")?, 8))
            .copied(),
        "runtime.MemProfileRate",
    )?;
    let disable = ["runtime.schedinit", "runtime.init"]
        .iter()
        .filter_map(|name| rt.refs(name).ok())
        .find_map(|refs| flag_before_store(&refs, rate));
    Ok(Variables {
        mbuckets,
        cycle,
        rate,
        disable,
    })
}

/// The single address in `set`, or why not.
fn one(set: impl Iterator<Item = u64>, what: &str) -> Result<u64, String> {
    let all: Vec<u64> = set.collect();
    match all[..] {
        [one] => Ok(one),
        _ => Err(format!(
            "{} candidates for {what} in the runtime's code",
            all.len()
        )),
    }
}

/// The byte read shortly before a store to `rate`: `if disableMemoryProfiling { rate = 0 }`.
fn flag_before_store(refs: &[Ref], rate: u64) -> Option<u64> {
    let store = refs.iter().find(|r| r.target == rate && r.store)?;
    refs.iter()
        .rev()
        .filter(|r| r.index < store.index && store.index - r.index <= FLAG_TO_RATE)
        .find(|r| r.size == 1 && !r.store)
        .map(|r| r.target)
}

/// The RIP-relative data references of the amd64 code at `ip`.
fn references(code: &[u8], ip: u64) -> Vec<Ref> {
    let mut out = Vec::new();
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    for (index, ins) in decoder.iter().enumerate() {
        if !ins.is_ip_rel_memory_operand() || ins.mnemonic() == Mnemonic::Call {
            continue;
        }
        let lea = ins.mnemonic() == Mnemonic::Lea;
        out.push(Ref {
            target: ins.ip_rel_memory_address(),
            size: if lea { 0 } else { bytes(ins.memory_size()) },
            store: ins.op0_kind() == OpKind::Memory && ins.mnemonic() == Mnemonic::Mov,
            index,
        });
    }
    out
}

/// Bytes of an integer memory operand (the variables are a bool, a uint32 and words); other
/// operands count as none of them.
fn bytes(m: MemorySize) -> usize {
    match m {
        MemorySize::UInt8 | MemorySize::Int8 => 1,
        MemorySize::UInt32 | MemorySize::Int32 => 4,
        MemorySize::UInt64 | MemorySize::Int64 => 8,
        _ => usize::MAX,
    }
}
