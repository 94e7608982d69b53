# syntax=docker/dockerfile:1
#
# clerk-sync as a container image: a Rust build stage, then a small Debian runtime that holds
# only the binary and CA certificates.
#
#   docker build -t clerk-sync .
#
#   # try it: SQLite file and a generated development secret, both kept in the /data volume
#   docker run --rm -p 3000:3000 -v clerk-sync-data:/data clerk-sync
#
#   # production (Neon): migrations as a release step, then the service without them
#   docker run --rm -e DATABASE_URL clerk-sync migrate
#   docker run -d -p 3000:3000 -e DATABASE_URL -e CLERK_WEBHOOK_SIGNING_SECRET clerk-sync serve --no-migrate
#
# docs/deploy.md has the rest: which Neon endpoint, probes, several replicas, secret rotation.
#
# Needs BuildKit for the cache mounts below (the default builder since Docker Engine 23).

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /build

# Only what the build reads. benches/ is there because Cargo.toml declares a [[bench]] target,
# and cargo refuses a manifest whose declared targets are missing; tools/ because cargo loads
# every workspace member's manifest (and finds its targets), even for `--bin clerk-sync`.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY tools ./tools

# The crates.io download cache and the target directory are BuildKit cache mounts, so a
# rebuild after a source change recompiles clerk-sync alone, not its dependencies.
# A cache mount is not part of the image: the binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/build/target,sharing=locked \
    cargo build --release --locked --bin clerk-sync \
    && install -m 0755 target/release/clerk-sync /usr/local/bin/clerk-sync


FROM debian:bookworm-slim AS runtime

# CA certificates: Clerk's Backend API is reached over HTTPS with the system's trust store.
# Not pinned on purpose: it should follow Debian's security updates on every rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 clerk-sync \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /data \
        --shell /usr/sbin/nologin clerk-sync \
    && mkdir /data \
    && chown 10001:10001 /data

COPY --from=builder /usr/local/bin/clerk-sync /usr/local/bin/clerk-sync

# Without DATABASE_URL, clerk-sync uses the SQLite file clerk-sync.db in its working directory
# (and keeps a generated development secret next to it), so the working directory is the
# volume. DATABASE_URL is deliberately not set here: give your Neon / PostgreSQL string, or
# sqlite:///data/clerk-sync.db for a single-container set-up, at run time.
WORKDIR /data
VOLUME ["/data"]

USER 10001:10001

# CLERK_SYNC_LISTEN wins over PORT. On platforms that inject PORT and route to it, pass
# CLERK_SYNC_LISTEN=0.0.0.0:$PORT, or an empty CLERK_SYNC_LISTEN to listen on 0.0.0.0:$PORT.
ENV CLERK_SYNC_LISTEN=0.0.0.0:3000
EXPOSE 3000

# No HEALTHCHECK: the image has no curl or wget to run one. Use your orchestrator's HTTP probes
# instead: GET /healthz for liveness (the process answers), GET /readyz for readiness (the
# database answers too; 503 otherwise).

# Every client connection takes a file descriptor. Docker's default open-file limit depends on
# the daemon (often 1048576, sometimes 1024); clerk-sync lowers CLERK_SYNC_MAX_CONNECTIONS
# (4096 by default) to leave 128 descriptors for itself, with a log line. Give it at least 8192:
# docker run --ulimit nofile=65536:65536 (Compose: ulimits: { nofile: 65536 }).

# clerk-sync handles SIGTERM itself (finishes requests in flight), so it runs as PID 1.
ENTRYPOINT ["clerk-sync"]
CMD ["serve"]
