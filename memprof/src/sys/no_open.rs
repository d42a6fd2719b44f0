//! Running a closure on a thread of its own that cannot open files: a seccomp filter makes
//! `open`/`openat`/`openat2` fail with `EACCES` there. A filter binds only the thread that installs it
//! (and threads it starts, which this one does not), so the rest of memprof is untouched, and
//! it goes with the thread.
//!
//! Used where a library reads a file memprof knows it does not need and offers no way to skip
//! the read (aya 0.14's loader and the kernel's BTF, see `kernel::loader_without_kernel_btf`).
use std::io;

/// Runs `f` on a new thread that cannot open files and returns its result. `Err` when the
/// filter could not be installed (no seccomp in this kernel): `f` has not run then.
pub fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    std::thread::Builder::new()
        .name("memprof-no-open".into())
        .spawn(move || {
            deny_opens()?;
            Ok(f())
        })?
        .join()
        .map_err(|_| io::Error::other("the thread without file access panicked"))?
}

/// Installs the filter on the calling thread: `open` (where the architecture has it) and
/// `openat`, `openat2` fail with `EACCES`; every other call is allowed.
fn deny_opens() -> io::Result<()> {
    let errno = libc::SECCOMP_RET_ERRNO | libc::EACCES as u32;
    let mut denied = vec![libc::SYS_openat, libc::SYS_openat2];
    // musl's `open` is this call where the architecture has it.
    #[cfg(not(any(
        target_arch = "aarch64",
        target_arch = "riscv64",
        target_arch = "loongarch64"
    )))]
    denied.push(libc::SYS_open);
    // Load the call number, compare it with each denied one, return the verdict. The
    // architecture is not checked: this is not a sandbox, only the calls the closure's code
    // makes (native ones) need to fail.
    let mut prog = vec![stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0)];
    for (i, nr) in denied.iter().enumerate() {
        // On a match, jump over the remaining compares and the ALLOW to the ERRNO.
        let to_deny = (denied.len() - i) as u8;
        prog.push(jump_if_equal(*nr as u32, to_deny));
    }
    prog.push(stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW));
    prog.push(stmt(libc::BPF_RET | libc::BPF_K, errno));
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: plain prctl calls; `fprog` points at `prog`, alive across the call. Without
    // CAP_SYS_ADMIN a filter needs no_new_privs, which is per thread as well.
    unsafe {
        let none: libc::c_ulong = 0;
        if libc::prctl(
            libc::PR_SET_NO_NEW_PRIVS,
            1 as libc::c_ulong,
            none,
            none,
            none,
        ) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &fprog as *const libc::sock_fprog,
            ) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump_if_equal(k: u32, jt: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf: 0,
        k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_closures_thread_is_denied_opens() {
        let denied = run(|| std::fs::File::open("/proc/self/status").map(|_| ())).unwrap();
        assert_eq!(
            denied.unwrap_err().raw_os_error(),
            Some(libc::EACCES),
            "opening on the filtered thread must fail"
        );
        // Each call, as a C library other than this one may make it.
        let errnos = run(|| {
            let path = c"/proc/self/status".as_ptr();
            // SAFETY: plain system calls on a valid path; a descriptor opened by mistake is
            // reported by the assertion below (and leaks only in a failing test).
            let errno = |ret: libc::c_long| {
                (ret < 0).then(|| std::io::Error::last_os_error().raw_os_error())
            };
            let mut out = vec![unsafe {
                errno(libc::syscall(
                    libc::SYS_openat,
                    libc::AT_FDCWD,
                    path,
                    libc::O_RDONLY,
                ))
            }];
            let how = [0u64; 3]; // struct open_how: flags, mode, resolve
            out.push(unsafe {
                errno(libc::syscall(
                    libc::SYS_openat2,
                    libc::AT_FDCWD,
                    path,
                    how.as_ptr(),
                    24,
                ))
            });
            #[cfg(target_arch = "x86_64")]
            out.push(unsafe { errno(libc::syscall(libc::SYS_open, path, libc::O_RDONLY)) });
            out
        })
        .unwrap();
        for e in errnos {
            assert_eq!(e, Some(Some(libc::EACCES)));
        }
        // Other calls still work there.
        assert!(run(|| std::fs::metadata("/proc/self/status").is_ok()).unwrap());
        // And this thread, like every other, still opens files.
        std::fs::File::open("/proc/self/status").unwrap();
    }
}
