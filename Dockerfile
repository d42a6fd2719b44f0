# memprof's image: one static (musl) binary with its BPF programs embedded, and the CA bundle
# the S3 client trusts; no base image, no shell, no package manager.
#
# Build it with `cargo xtask image` (xtask/src/image.rs): the binary is built outside the image
# (`cargo build --release --target x86_64-unknown-linux-musl`, which needs the nightly and
# bpf-linker `cargo xtask setup` installs), then staged in a build context with this file:
#   memprof                  the binary
#   ca-certificates.crt      the build machine's CA bundle
#   var-lib/memprof/         an empty directory: the default spool and profile directory
FROM scratch

# The S3 client (aws-smithy-http-client: rustls, roots from rustls-native-certs) reads the
# system's roots from here (or from SSL_CERT_FILE / SSL_CERT_DIR when set).
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY memprof /usr/local/bin/memprof
# /var/lib/memprof, where the spool and profiles are by default: mode 1777 (set when staged),
# so that both users memprof runs as can write there when no volume is mounted: 65532, and
# uid 0 with the manifests' capabilities only (no DAC_OVERRIDE). Kubernetes' emptyDir is
# writable by every user anyway.
COPY --chown=65532:65532 var-lib /var/lib/

# Not root by default. With this user memprof detects by polling procfs and sees only the
# processes of its own user: `memprof top`, `memprof capture` and a sidecar beside an
# application that runs as the same user work so.
# The daemon's kernel detection (BPF and PERFMON, or SYS_ADMIN) and reading other users' processes
# (SYS_PTRACE) need uid 0: Kubernetes grants added capabilities only to uid 0, as no ambient
# capabilities are set, so deploy/ runs memprof with `runAsUser: 0` and those capabilities.
USER 65532:65532

# Metrics and health (MEMPROF_LISTEN, default :9400).
EXPOSE 9400
ENTRYPOINT ["/usr/local/bin/memprof"]
