//! Preparing and attaching the kernel programs: the `.rodata` values they need from the
//! running kernel, the programs attached to the kernel's hooks (as BPF links others can hold
//! when shared), and this instance's own programs, which the attached ones reach through tail
//! calls.

use anyhow::{anyhow, Context, Result};
use aya::{
    programs::{links::FdLink, BtfTracePoint, TracePoint},
    Btf as AyaBtf, Ebpf,
};
use memprof_common::globals as g;
use tracing::debug;

use super::{
    btf::{self, Btf},
    gate::{self, Rss},
    offsets, tenant, Hook,
};

/// The typedef a tp_btf program on `rss_stat` names as its target.
const RSS_STAT_TRACE: &str = "btf_trace_rss_stat";

/// The function a task iterator names as its target.
const ITER_TASK: &str = "bpf_iter_task";

/// The `.rodata` values, how the running kernel keeps its RSS counters, (for the tp_btf hook)
/// the id of the programs' target in the kernel's BTF, and that of the task iterator's (where
/// the kernel has BTF).
pub struct Globals {
    pub values: Vec<(&'static str, u64)>,
    pub rss_layout: Option<offsets::RssLayout>,
    pub rss_stat_trace: Option<u32>,
    pub iter_task: Option<u32>,
}

pub fn globals(hook: Hook, own_pidns: u64) -> Result<Globals> {
    let tracefs = offsets::tracefs()?;
    let init_pidns = own_pidns == offsets::INIT_PIDNS_INUM;
    let mut values: Vec<(&'static str, u64)> = vec![
        (g::PIDNS_IS_INIT, init_pidns as u64),
        (g::PAGE_SHIFT, offsets::page_shift()),
    ];
    let (mut rss_layout, mut rss_stat_trace, mut iter_task) = (None, None, None);
    // Read once: the listing's counters and the tp_btf hook's layout.
    let mut rss_found = None;
    let btf = match Btf::from_sys_fs() {
        Ok(btf) => {
            values.extend(offsets::task_offsets(&btf)?);
            // The kernel's listing reads the counters whichever hook follows them; without
            // them (a layout memprof does not know) there is no listing, and only the tp_btf
            // hook fails (below).
            let rss = offsets::rss_offsets(&btf);
            if let Ok(rss) = &rss {
                values.push((g::RSS_COUNT_OFF, rss.count_off));
                values.push((g::RSS_STRIDE, rss.stride));
                values.push((
                    g::RSS_PROBE_READ,
                    (rss.layout == offsets::RssLayout::AtomicArray) as u64,
                ));
                iter_task = btf.func_id(ITER_TASK).ok();
            }
            rss_found = Some(rss);
            // Without them the listing names no memory cgroup, and the safety net reads each
            // quiet process's /proc/PID/cgroup instead.
            match offsets::memcg_offsets(&btf) {
                Ok(memcg) => values.extend(memcg),
                Err(e) => debug!("the kernel's listing carries no memory cgroup: {e:#}"),
            }
            Some(btf)
        }
        // The classic hook attributes events to `current`; in the initial PID namespace no
        // translation is needed, so it runs without BTF.
        Err(_) if hook == Hook::Classic && init_pidns => None,
        Err(e) => {
            return Err(e.context("kernel BTF is needed to read RSS counters and translate PIDs"))
        }
    };
    match hook {
        Hook::Btf => {
            let btf = btf.as_ref().context("tp_btf needs kernel BTF")?;
            rss_layout = Some(rss_found.context("tp_btf needs kernel BTF")??.layout);
            rss_stat_trace = Some(btf.typedef_id(RSS_STAT_TRACE)?);
        }
        Hook::Classic => {
            let format = offsets::read_format(tracefs, "kmem", "rss_stat")?;
            for (name, field) in [
                (g::TP_MM_ID_OFF, "mm_id"),
                (g::TP_CURR_OFF, "curr"),
                (g::TP_MEMBER_OFF, "member"),
                (g::TP_SIZE_OFF, "size"),
            ] {
                values.push((name, offsets::tracepoint_field(&format, field)?));
            }
        }
    }
    let oom_format = offsets::read_format(tracefs, "oom", "mark_victim")?;
    values.push((
        g::TP_OOM_PID_OFF,
        offsets::tracepoint_field(&oom_format, "pid")?,
    ));
    for (name, field) in [
        (g::TP_OOM_ANON_OFF, "anon_rss"),
        (g::TP_OOM_FILE_OFF, "file_rss"),
        (g::TP_OOM_SHMEM_OFF, "shmem_rss"),
    ] {
        // Recent kernels only (6.1 has none); 0, never a data field's offset, tells the program
        // the field is not there.
        values.push((
            name,
            offsets::tracepoint_field(&oom_format, field).unwrap_or(0),
        ));
    }
    let signal_format = offsets::read_format(tracefs, "signal", "signal_deliver")?;
    values.push((
        g::TP_SIG_OFF,
        offsets::tracepoint_field(&signal_format, "sig")?,
    ));
    Ok(Globals {
        values,
        rss_layout,
        rss_stat_trace,
        iter_task,
    })
}

/// The BTF a tp_btf program on `rss_stat` is loaded with (see `target_btf`).
pub fn rss_stat_btf(id: u32) -> Result<AyaBtf> {
    target_btf(id, RSS_STAT_TRACE, btf::KIND_TYPEDEF)
}

/// The BTF the task iterator is loaded with (see `target_btf`).
pub fn iter_task_btf(id: u32) -> Result<AyaBtf> {
    target_btf(id, ITER_TASK, btf::KIND_FUNC)
}

/// aya finds a tracing program's target by its name and kind in the BTF it is given (a
/// tp_btf program's typedef, an iterator's function) and hands the kernel that type's id,
/// which the kernel checks. Parsing the whole of the kernel's BTF for that one lookup costs
/// aya ~30 MiB at start-up (memprof's peak); this BTF holds only the target, `name` of
/// `kind` at the kernel's `id`, after placeholder pointers the lookup passes over.
fn target_btf(id: u32, name: &str, kind: u32) -> Result<AyaBtf> {
    const KIND_PTR: u32 = 2;
    const HEADER_LEN: u32 = 24;
    let placeholders = id.checked_sub(1).context("a typedef with id 0")? as usize;
    let mut types = Vec::with_capacity((placeholders + 1) * 12);
    // Each: no name, the kind, pointing at void.
    for _ in 0..placeholders {
        for word in [0, KIND_PTR << 24, 0] {
            types.extend_from_slice(&u32::to_ne_bytes(word));
        }
    }
    for word in [1, kind << 24, 0] {
        types.extend_from_slice(&u32::to_ne_bytes(word));
    }
    let strings = [b"\0", name.as_bytes(), b"\0"].concat();
    let type_len = u32::try_from(types.len()).context("BTF type section too large")?;
    let mut blob = Vec::with_capacity(HEADER_LEN as usize + types.len() + strings.len());
    blob.extend_from_slice(&0xeb9f_u16.to_ne_bytes());
    blob.extend_from_slice(&[1, 0]); // version, flags
    for word in [HEADER_LEN, 0, type_len, type_len, strings.len() as u32] {
        blob.extend_from_slice(&word.to_ne_bytes());
    }
    blob.extend_from_slice(&types);
    blob.extend_from_slice(&strings);
    AyaBtf::parse(&blob, aya::Endianness::default()).context("building the tp_btf target's BTF")
}

/// Loads and attaches the programs on the kernel's hooks. When `shared`, every attachment
/// must be a BPF link (the kind other instances can hold, see `links.rs`), and the tracepoint
/// links are returned for the caller to hold; otherwise aya holds them all, and the `rss_stat`
/// attachment is returned too, for the gate to take off its hook (`gate.rs`).
pub fn all(
    bpf: &mut Ebpf,
    hook: Hook,
    btf: Option<&AyaBtf>,
    shared: bool,
) -> Result<(Vec<FdLink>, Rss)> {
    let mut made = Vec::new();
    for (name, category, event) in [
        ("process_exec", "sched", "sched_process_exec"),
        ("process_exit", "sched", "sched_process_exit"),
        ("oom_mark_victim", "oom", "mark_victim"),
        ("signal_deliver", "signal", "signal_deliver"),
    ] {
        made.extend(attach_tracepoint(bpf, name, category, event, shared)?);
    }
    debug_assert_eq!(tenant::ATTACHED.len(), 4);
    gate::load(bpf, hook, btf)?;
    let link = gate::attach(bpf, hook)?;
    if !shared {
        return Ok((made, Rss::On(link)));
    }
    made.push(gate::take_shared(bpf, hook, link)?);
    Ok((made, Rss::Shared))
}

/// Loads this instance's own programs: the event emitters and the heap walker.
pub fn load_own(bpf: &mut Ebpf, btf: Option<&AyaBtf>) -> Result<()> {
    if let Some(btf) = btf {
        let prog: &mut BtfTracePoint = program(bpf, "emit_btf")?.try_into()?;
        prog.load("rss_stat", btf).context("verifying emit_btf")?;
    }
    for name in ["emit_tp", "heap_walk"] {
        let prog: &mut TracePoint = program(bpf, name)?.try_into()?;
        prog.load().with_context(|| format!("verifying {name}"))?;
    }
    Ok(())
}

pub(super) fn program<'a>(bpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    bpf.program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the BPF object"))
}

fn attach_tracepoint(
    bpf: &mut Ebpf,
    name: &str,
    category: &str,
    event: &str,
    shared: bool,
) -> Result<Option<FdLink>> {
    let prog: &mut TracePoint = program(bpf, name)?.try_into()?;
    prog.load().with_context(|| format!("verifying {name}"))?;
    let link = prog
        .attach(category, event)
        .with_context(|| format!("attaching {category}/{event}"))?;
    if !shared {
        return Ok(None);
    }
    let link = FdLink::try_from(prog.take_link(link)?)
        .context("this kernel attaches tracepoints without BPF links; sharing needs them")?;
    Ok(Some(link))
}
