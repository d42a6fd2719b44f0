//! memprof: notices in the kernel that a process nears its memory limit and stores its heap
//! profile before the OOM killer strikes. Pipeline: detect → assess → capture → deliver; each
//! stage is a module, wired together by `daemon`.
pub mod assess;
pub mod capture;
pub(crate) mod cgroup;
pub mod commands;
pub mod config;
pub mod daemon;
pub(crate) mod deliver;
pub mod detect;
pub mod kernel;
pub mod logs;
pub mod metrics;
pub mod serve;
pub(crate) mod sys;
