//! A VM's process, as the test run holds it: started in a process group of its own, so that
//! it and the qemu beneath it die with the run (an early end, a guest past its deadline);
//! its output read through pipes (qemu reopens `/proc/self/fd/1` and `2`, which for a regular
//! file starts writing at offset 0 again and overwrites what the host's tests printed before:
//! CI logs to a file), relayed as it comes or written to a log, and kept for the caller.
use std::{
    fs::File,
    io::{BufRead, BufReader, Read, Write},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, Context, Result};

pub struct Guest {
    pgid: i32,
    /// The guest's standard output and exit status, once it has ended; taken by `finish`.
    end: Option<mpsc::Receiver<Result<(String, ExitStatus)>>>,
    log: Option<PathBuf>,
}

impl Guest {
    /// Starts `cmd`; with a `log`, what it prints goes there rather than to this terminal.
    pub fn start(mut cmd: Command, log: Option<&Path>) -> Result<Self> {
        let sink: Sink = match log {
            Some(path) => Sink::Log(Arc::new(Mutex::new(
                File::create(path).with_context(|| format!("creating {}", path.display()))?,
            ))),
            None => Sink::Live,
        };
        let mut child = cmd
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let out = child.stdout.take().context("stdout")?;
        let err = child.stderr.take().context("stderr")?;
        let pgid = child.id() as i32;
        let (tx, end) = mpsc::channel();
        std::thread::spawn(move || {
            let errors = {
                let sink = sink.clone();
                std::thread::spawn(move || sink.copy(err, false))
            };
            let read = sink.copy(out, true);
            let _ = errors.join();
            let status = child.wait().context("waiting for the VM");
            let _ = tx.send(read.and_then(|out| Ok((out, status?))));
        });
        Ok(Guest {
            pgid,
            end: Some(end),
            log: log.map(Path::to_path_buf),
        })
    }

    /// Waits up to `deadline` for the guest's end, prints what went to its log, and returns
    /// its standard output; a guest that ran out of time or failed is an error.
    pub fn finish(mut self, deadline: Duration) -> Result<String> {
        let end = self
            .end
            .take()
            .context("finished twice")?
            .recv_timeout(deadline);
        if end.is_err() {
            self.kill();
        }
        if let Some(log) = &self.log {
            let mut held = Vec::new();
            File::open(log).and_then(|mut f| f.read_to_end(&mut held))?;
            std::io::stdout().write_all(&held)?;
        }
        let Ok(end) = end else {
            bail!(
                "the VM had not ended after {} min: killed",
                deadline.as_secs() / 60
            );
        };
        let (out, status) = end?;
        if !status.success() {
            bail!("the VM ended with {status}");
        }
        Ok(out)
    }

    fn kill(&self) {
        // SAFETY: killpg has no memory-safety preconditions; the group is the VM's own.
        unsafe { libc::killpg(self.pgid, libc::SIGKILL) };
    }
}

/// A run that ends before `finish` (an error, a panic) takes the VM with it.
impl Drop for Guest {
    fn drop(&mut self) {
        if self.end.is_some() {
            self.kill();
        }
    }
}

#[derive(Clone)]
enum Sink {
    Live,
    Log(Arc<Mutex<File>>),
}

impl Sink {
    /// Copies `from` line by line to this terminal (stdout or stderr) or the log, and returns
    /// what it read when `keep`.
    fn copy(&self, from: impl Read, keep: bool) -> Result<String> {
        let mut kept = String::new();
        for line in BufReader::new(from).split(b'\n') {
            let mut line = line?;
            line.push(b'\n');
            match (self, keep) {
                (Sink::Log(file), _) => file.lock().unwrap().write_all(&line)?,
                (Sink::Live, true) => std::io::stdout().write_all(&line)?,
                (Sink::Live, false) => std::io::stderr().write_all(&line)?,
            }
            if keep {
                kept.push_str(&String::from_utf8_lossy(&line));
            }
        }
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[test]
    fn held_output_is_logged_and_stdout_returned() {
        let dir = tempfile_dir();
        let log = dir.join("log");
        let guest = Guest::start(sh("echo out; echo err >&2; echo more"), Some(&log)).unwrap();
        let out = guest.finish(Duration::from_secs(20)).unwrap();
        assert_eq!(out, "out\nmore\n");
        let logged = std::fs::read_to_string(&log).unwrap();
        for line in ["out", "err", "more"] {
            assert!(logged.lines().any(|l| l == line), "{logged:?}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_guest_past_its_deadline_is_killed_with_its_children() {
        // The shell's child holds the pipes too: only the group's kill ends the relay.
        let guest = Guest::start(sh("sleep 60 & sleep 60"), None).unwrap();
        let pgid = guest.pgid;
        let err = guest.finish(Duration::from_millis(300)).unwrap_err();
        assert!(err.to_string().contains("had not ended"), "{err:#}");
        let gone = || !alive_in_group(pgid);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !gone() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gone(), "the group outlived its kill");
    }

    #[test]
    fn a_failing_guest_is_an_error() {
        let guest = Guest::start(sh("exit 3"), None).unwrap();
        let err = guest.finish(Duration::from_secs(20)).unwrap_err();
        assert!(err.to_string().contains("ended with"), "{err:#}");
    }

    /// A process of group `pgid` that has not ended (a zombie has: its parent reaps it).
    fn alive_in_group(pgid: i32) -> bool {
        std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid pgrp …: the fields after the comm's closing parenthesis.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let pgrp = fields.nth(1).and_then(|p| p.parse::<i32>().ok());
            pgrp == Some(pgid) && state != Some("Z")
        })
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-guest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
