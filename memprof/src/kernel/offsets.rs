//! The kernel facts the BPF programs need, gathered before loading: struct offsets from BTF,
//! tracepoint record offsets from tracefs, memprof's own PID namespace and the page size.
use std::path::Path;

use anyhow::{bail, Context, Result};
use memprof_common::globals as g;

use super::btf::Btf;

/// How this kernel stores `mm->rss_stat` (both exist in production).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RssLayout {
    /// ≥ 6.2: `struct percpu_counter rss_stat[NR_MM_COUNTERS]`.
    PercpuCounter,
    /// ≤ 6.1: `struct mm_rss_stat { atomic_long_t count[NR_MM_COUNTERS]; }`.
    AtomicArray,
}

#[derive(Debug, PartialEq, Eq)]
pub struct RssOffsets {
    pub layout: RssLayout,
    /// Offset of `rss_stat[0]`'s counter inside `mm_struct`.
    pub count_off: u64,
    pub stride: u64,
}

/// Where `mm->rss_stat[i]`'s count lives, whichever layout the kernel uses.
pub fn rss_offsets(btf: &Btf) -> Result<RssOffsets> {
    let mm = btf.struct_id("mm_struct")?;
    let member = btf.member(mm, "rss_stat")?;
    if btf.is_array(member.type_id)? {
        let (elem, _) = btf.array(member.type_id)?;
        let count = btf.member(elem, "count").context("percpu_counter.count")?;
        Ok(RssOffsets {
            layout: RssLayout::PercpuCounter,
            count_off: member.offset + count.offset,
            stride: btf.size_of(elem)?,
        })
    } else {
        let count = btf
            .member(member.type_id, "count")
            .context("mm_rss_stat.count")?;
        let (elem, _) = btf.array(count.type_id)?;
        let counter = btf
            .member(elem, "counter")
            .context("atomic_long_t.counter")?;
        Ok(RssOffsets {
            layout: RssLayout::AtomicArray,
            count_off: member.offset + count.offset + counter.offset,
            stride: btf.size_of(elem)?,
        })
    }
}

/// Offsets used to attribute an mm to a process and translate its PID.
pub fn task_offsets(btf: &Btf) -> Result<Vec<(&'static str, u64)>> {
    let upid = btf.struct_id("upid")?;
    let pidns = btf.struct_id("pid_namespace")?;
    let ns = btf.member(pidns, "ns")?;
    Ok(vec![
        (g::MM_OWNER_OFF, btf.offset_of("mm_struct", "owner")?),
        (g::TASK_TGID_OFF, btf.offset_of("task_struct", "tgid")?),
        (g::TASK_MM_OFF, btf.offset_of("task_struct", "mm")?),
        (
            g::TASK_START_OFF,
            btf.offset_of("task_struct", "start_boottime")?,
        ),
        (
            g::TASK_GROUP_LEADER_OFF,
            btf.offset_of("task_struct", "group_leader")?,
        ),
        (
            g::TASK_THREAD_PID_OFF,
            btf.offset_of("task_struct", "thread_pid")?,
        ),
        (g::PID_LEVEL_OFF, btf.offset_of("pid", "level")?),
        (g::PID_NUMBERS_OFF, btf.offset_of("pid", "numbers")?),
        (g::UPID_SIZE, btf.size_of(upid)?),
        (g::UPID_NR_OFF, btf.offset_of("upid", "nr")?),
        (g::UPID_NS_OFF, btf.offset_of("upid", "ns")?),
        (
            g::PIDNS_INUM_OFF,
            ns.offset + btf.member(ns.type_id, "inum")?.offset,
        ),
    ])
}

/// Offsets that lead from a task to the directory of its memory cgroup (the kernel's listing
/// of processes); an error where the kernel has no memory controller.
pub fn memcg_offsets(btf: &Btf) -> Result<Vec<(&'static str, u64)>> {
    let memory = btf.enum_value("cgroup_subsys_id", "memory_cgrp_id")?;
    let pointer = 8;
    Ok(vec![
        (
            g::TASK_CGROUPS_OFF,
            btf.offset_of("task_struct", "cgroups")?,
        ),
        (
            g::CSS_SET_MEMORY_OFF,
            btf.offset_of("css_set", "subsys")? + memory * pointer,
        ),
        (
            g::CSS_CGROUP_OFF,
            btf.offset_of("cgroup_subsys_state", "cgroup")?,
        ),
        (g::CGROUP_KN_OFF, btf.offset_of("cgroup", "kn")?),
        (g::KERNFS_ID_OFF, btf.offset_of("kernfs_node", "id")?),
    ])
}

pub use crate::sys::pidns::INITIAL as INIT_PIDNS_INUM;

/// Inode number of memprof's own PID namespace.
pub fn own_pidns_inum() -> Result<u64> {
    crate::sys::pidns::own().context("stat /proc/self/ns/pid")
}

pub fn page_shift() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    page.trailing_zeros() as u64
}

/// The tracefs mount, mounting it at /sys/kernel/tracing when no mount exists yet.
pub fn tracefs() -> Result<&'static Path> {
    for dir in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(Path::new(dir));
        }
    }
    let dir = c"/sys/kernel/tracing";
    // SAFETY: valid NUL-terminated strings; mount(2) has no other preconditions.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            dir.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        bail!(
            "tracefs is not mounted and mounting it failed: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(Path::new("/sys/kernel/tracing"))
}

/// Byte offset of `field` in a tracepoint's record, from its `format` file.
pub fn tracepoint_field(format: &str, field: &str) -> Result<u64> {
    for line in format.lines() {
        let Some(decl) = line.trim().strip_prefix("field:") else {
            continue;
        };
        let Some((decl, rest)) = decl.split_once(';') else {
            continue;
        };
        let name = decl.rsplit([' ', '*']).next().unwrap_or_default();
        let name = name.split('[').next().unwrap_or_default();
        if name != field {
            continue;
        }
        let off = rest
            .split(';')
            .find_map(|kv| kv.trim().strip_prefix("offset:"))
            .context("field without offset")?;
        return Ok(off.trim().parse()?);
    }
    bail!("tracepoint has no field {field}")
}

pub fn read_format(tracefs: &Path, category: &str, name: &str) -> Result<String> {
    let path = tracefs
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSS_STAT_FORMAT: &str = include_str!("../../tests/fixtures/rss_stat.format");

    #[test]
    fn classic_rss_stat_fields() {
        assert_eq!(tracepoint_field(RSS_STAT_FORMAT, "mm_id").unwrap(), 8);
        assert_eq!(tracepoint_field(RSS_STAT_FORMAT, "curr").unwrap(), 12);
        assert_eq!(tracepoint_field(RSS_STAT_FORMAT, "member").unwrap(), 16);
        assert_eq!(tracepoint_field(RSS_STAT_FORMAT, "size").unwrap(), 24);
        assert!(tracepoint_field(RSS_STAT_FORMAT, "nope").is_err());
    }

    /// Both layouts, read from the kernel this runs on: whichever it is, the numbers must be
    /// those of one of the two known shapes.
    #[test]
    fn rss_layout_of_running_kernel() {
        let Ok(btf) = Btf::from_sys_fs() else {
            assert!(std::env::var_os("CI").is_none(), "CI machines have BTF");
            eprintln!("skipping: no /sys/kernel/btf/vmlinux");
            return;
        };
        let rss = rss_offsets(&btf).unwrap();
        match rss.layout {
            RssLayout::PercpuCounter => assert_eq!(rss.stride, 40),
            RssLayout::AtomicArray => assert_eq!(rss.stride, 8),
        }
        assert!(task_offsets(&btf)
            .unwrap()
            .iter()
            .chain(&memcg_offsets(&btf).unwrap())
            .all(|(_, off)| *off < 16384));
    }
}
