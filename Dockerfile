# syntax=docker/dockerfile:1
# sidegate container image: static-ish release binary on a slim Debian base.
#   docker build -t sidegate .
#   docker run -v ./sidegate.toml:/etc/sidegate/sidegate.toml:ro -v ./secrets:/etc/sidegate/secrets:ro \
#     -p 4180:4180 sidegate

FROM rust:1-bookworm AS builder
# cmake: aws-lc-sys falls back to a CMake build on some targets
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends pkg-config libssl-dev cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# cache mounts keep the registry and build artefacts across image builds
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin sidegate \
 && install -D -m 0755 target/release/sidegate /out/sidegate

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 sidegate \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin sidegate \
 && mkdir -p /etc/sidegate
COPY --from=builder /out/sidegate /usr/local/bin/sidegate
# numeric, so Kubernetes' runAsNonRoot can verify it without /etc/passwd
USER 65532:65532
# 4180: proxied traffic; 9180: admin (health, readiness, metrics)
EXPOSE 4180 9180
ENTRYPOINT ["/usr/local/bin/sidegate"]
CMD ["run", "--config", "/etc/sidegate/sidegate.toml"]
