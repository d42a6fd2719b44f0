# memprof image: the release binary (with its BPF programs embedded) on a small Debian base.
# Build from the repository root: docker build -t memprof .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# `cargo xtask setup` adds the nightly rust-src and builds bpf-linker against the nightly's LLVM.
RUN cargo xtask setup --build-only && cargo build --release -p memprof

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/memprof /usr/local/bin/memprof
ENTRYPOINT ["/usr/local/bin/memprof"]
