# syntax=docker/dockerfile:1
# finpass-gateway production image: `docker build -t finpass-gateway .`
# The sandbox (in-process Finpass simulator and S3 server) is compiled out
# (--no-default-features), so none of that code ships. Checked by .ci/dockerfile-check.sh.

# Base images are pinned by digest (the tag says what, the digest fixes the bytes); Renovate
# (renovate.json) proposes digest updates. Checked by .ci/dockerfile-check.sh.

# ---- build ------------------------------------------------------------------------------
# Same toolchain as Cargo.toml's rust-version; bookworm to match the distroless runtime's glibc.
FROM rust:1.95-slim-bookworm@sha256:d7482085ff5b415f84dba5647ae71606650bdef00db7aeb69f4b3d170c3e4082 AS builder
WORKDIR /app

# cargo-auditable embeds the crate list (names, versions, sources) of Cargo.lock into the binary
# (a `.dep-v0` section), so scanners (Trivy, Grype, Syft, `cargo audit bin`) see the image's
# Rust dependencies and their advisories. Pinned; built from crates.io with its own lock file.
ARG CARGO_AUDITABLE_VERSION=0.7.7
RUN cargo install cargo-auditable --locked --version "${CARGO_AUDITABLE_VERSION}"

# Dependencies first, against placeholder sources: this layer is rebuilt only when
# Cargo.toml or Cargo.lock change, not on every source edit.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo auditable build --profile dist --locked --no-default-features \
    && rm -rf src

# The `dist` profile (Cargo.toml): thin LTO and stripped symbols, for the image only; local
# release builds and the benchmark skip LTO to build quicker.
# The real sources. No build.rs; the only include_str! (README.md) is test-only code.
COPY src ./src
# touch: the placeholders above are newer than the copied files, so cargo would otherwise
# consider the crate up to date and ship the empty main.
RUN touch src/main.rs src/lib.rs \
    && cargo auditable build --profile dist --locked --no-default-features \
    && cp target/dist/finpass-gateway /finpass-gateway

# ---- runtime ----------------------------------------------------------------------------
# glibc + libgcc + CA certificates, no shell, no package manager; runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f

# Set by the release pipeline: --build-arg VERSION=... --build-arg REVISION=$(git rev-parse HEAD)
# --build-arg SOURCE_URL=<the repository's URL>.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE_URL=https://git.example.com/platform/finpass-gateway
LABEL org.opencontainers.image.title="finpass-gateway" \
      org.opencontainers.image.description="Stores customers' Finpass Account Aggregator statements in S3, streaming, and returns permanent object keys." \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="LicenseRef-Proprietary" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

COPY --from=builder /finpass-gateway /usr/local/bin/finpass-gateway
USER 65532:65532
# 8080: the API (LISTEN_ADDR default); 9090: /metrics when METRICS_ADDR=0.0.0.0:9090 (k8s).
EXPOSE 8080 9090
# No HEALTHCHECK: Kubernetes probes /healthz and /readyz (and distroless has no curl).
ENTRYPOINT ["/usr/local/bin/finpass-gateway"]
