//! Taking this instance's `rss_stat` program off its hook and putting it back. The program
//! runs on every page fault of every process on the node, and merely being attached costs
//! them (~4 % of a pure page-fault loop, an empty program as much as memprof's); while every
//! watched process is far from its level it need not be there (`detect::floor` decides).
//!
//! Nothing is lost while it is off: the levels armed in `PROCS` stay, exits and execs still
//! free their entries (those hooks stay attached), and a process the program meets for the
//! first time after it is back is reported at its next page fault and armed, as at start-up.
//! Only programs this instance owns are switched: the links of a shared set are held by
//! every instance on the node (`links.rs`), and one instance taking them off would blind the
//! others.
use anyhow::{Context, Result};
use aya::{
    programs::{
        links::FdLink, tp_btf::BtfTracePointLinkId, trace_point::TracePointLinkId, BtfTracePoint,
        TracePoint,
    },
    Btf as AyaBtf, Ebpf,
};
use tracing::warn;

use super::{attach::program, Hook, Kernel};

/// This instance's `rss_stat` attachment.
pub enum Rss {
    /// On its hook, by this instance's own link.
    On(RssLink),
    /// Off its hook.
    Off,
    /// Part of the node's shared set: always on, its links held by every instance.
    Shared,
}

pub enum RssLink {
    Btf(BtfTracePointLinkId),
    Classic(TracePointLinkId),
}

/// Verifies the `rss_stat` program of `hook` (`btf`: the tp_btf target's).
pub fn load(bpf: &mut Ebpf, hook: Hook, btf: Option<&AyaBtf>) -> Result<()> {
    match hook {
        Hook::Btf => {
            let prog: &mut BtfTracePoint = program(bpf, hook.program())?.try_into()?;
            prog.load("rss_stat", btf.context("tp_btf needs kernel BTF")?)
        }
        Hook::Classic => {
            let prog: &mut TracePoint = program(bpf, hook.program())?.try_into()?;
            prog.load()
        }
    }
    .with_context(|| format!("verifying {}", hook.program()))
}

/// Puts the loaded `rss_stat` program of `hook` on its hook.
pub fn attach(bpf: &mut Ebpf, hook: Hook) -> Result<RssLink> {
    let link = match hook {
        Hook::Btf => {
            let prog: &mut BtfTracePoint = program(bpf, hook.program())?.try_into()?;
            prog.attach().map(RssLink::Btf)
        }
        Hook::Classic => {
            let prog: &mut TracePoint = program(bpf, hook.program())?.try_into()?;
            prog.attach("kmem", "rss_stat").map(RssLink::Classic)
        }
    };
    link.with_context(|| format!("attaching {hook}"))
}

/// The attachment as a BPF link, for the shared set (other instances hold it too).
pub fn take_shared(bpf: &mut Ebpf, hook: Hook, link: RssLink) -> Result<FdLink> {
    Ok(match link {
        RssLink::Btf(id) => {
            let prog: &mut BtfTracePoint = program(bpf, hook.program())?.try_into()?;
            FdLink::from(prog.take_link(id)?)
        }
        RssLink::Classic(id) => {
            let prog: &mut TracePoint = program(bpf, hook.program())?.try_into()?;
            FdLink::try_from(prog.take_link(id)?)
                .context("this kernel attaches tracepoints without BPF links; sharing needs them")?
        }
    })
}

fn detach(bpf: &mut Ebpf, hook: Hook, link: RssLink) -> Result<()> {
    match link {
        RssLink::Btf(id) => {
            let prog: &mut BtfTracePoint = program(bpf, hook.program())?.try_into()?;
            prog.detach(id)?;
        }
        RssLink::Classic(id) => {
            let prog: &mut TracePoint = program(bpf, hook.program())?.try_into()?;
            prog.detach(id)?;
        }
    }
    Ok(())
}

impl Kernel {
    /// Whether this instance may take `rss_stat` off its hook; why not.
    pub fn rss_switchable(&self) -> Result<(), &'static str> {
        match self.rss {
            Rss::Shared => Err(
                "the programs are the node's shared set, whose links every instance holds; \
                 rss_stat stays attached",
            ),
            _ => Ok(()),
        }
    }

    /// Attaches `rss_stat` with every CPU's cached process state to be read afresh: what
    /// changed while the program was away is then seen. The epoch moves first, so that no
    /// event runs against a stale cache.
    fn attach_afresh(&mut self) -> Result<RssLink> {
        self.arm.bump_epoch();
        attach(&mut self.bpf, self.hook)
    }

    /// Puts `rss_stat` on its hook (`on`) or takes it off. A failure to take it off leaves it
    /// off all the same (aya lets go of the link); a failure to put it back is logged and
    /// tried again at the gate's next opening, the safety net's full rounds reading every
    /// process meanwhile.
    pub fn switch_rss(&mut self, on: bool) {
        let was = std::mem::replace(&mut self.rss, Rss::Off);
        self.rss = match (was, on) {
            (Rss::Off, true) => match self.attach_afresh() {
                Ok(link) => {
                    crate::metrics::rss_stat_attached(true, true);
                    Rss::On(link)
                }
                Err(e) => {
                    // Tried again at the gate's next opening.
                    warn!(
                        "putting rss_stat back on its hook failed: {e:#}; until it is back only \
                         the safety-net poll and the container trigger detect"
                    );
                    Rss::Off
                }
            },
            (Rss::On(link), false) => {
                // aya lets go of the link either way: it is off its hook, or was never known.
                if let Err(e) = detach(&mut self.bpf, self.hook, link) {
                    warn!("taking rss_stat off its hook: {e:#}");
                }
                crate::metrics::rss_stat_attached(false, true);
                Rss::Off
            }
            (was, _) => was,
        };
    }
}
