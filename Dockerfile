# syntax=docker/dockerfile:1
# sidegate's container image: a release build on Debian bookworm, run as uid 65532 with only
# the shared libraries the binary links (OpenSSL 3, libxml2, xmlsec1 and its OpenSSL backend).
# Any OCI builder works (deploy/README.md, "Build the image"):
#   docker build -t sidegate .        podman build -t sidegate .        buildah bud -t sidegate .
#   docker run --read-only -p 4180:4180 \
#     -v ./sidegate.toml:/etc/sidegate/sidegate.toml:ro -v ./secrets:/etc/sidegate/secrets:ro sidegate
# with the config's *_file keys pointing into the mounts (/etc/sidegate/secrets/cookie-secrets, ...).

FROM rust:1-bookworm AS builder
# pkg-config and the -dev packages: headers and link libraries for openssl-sys, libxml and
# samael's xmlsec feature (libxmlsec1-dev brings libxslt1-dev, which its pkg-config asks for);
# libclang-dev and clang: samael's bindgen step; cmake: aws-lc-sys on targets without
# prebuilt bindings.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      pkg-config libssl-dev libxml2-dev libxmlsec1-dev libclang-dev clang cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# cache mounts keep the registry and build artefacts across image builds; the binary is
# copied out of the cached target directory in the same step
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin sidegate \
 && install -D -m 0755 target/release/sidegate /out/sidegate

FROM debian:bookworm-slim
# The runtime halves of the builder's -dev packages. xmlsec1 is built without dynamic
# crypto loading, so libxmlsec1-openssl is linked directly and must be present;
# libxmlsec1 pulls libxslt1.1. ca-certificates: https to the IdP.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates libssl3 libxml2 libxmlsec1 libxmlsec1-openssl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 sidegate \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin sidegate \
 && mkdir -p /etc/sidegate
COPY --from=builder /out/sidegate /usr/local/bin/sidegate
# sidegate writes nothing at run time: the root filesystem can be read-only.
# numeric, so Kubernetes' runAsNonRoot can verify it without /etc/passwd
USER 65532:65532
# 4180: proxied traffic and forward-auth checks; 9180: admin (/healthz, /readyz, /metrics).
# No HEALTHCHECK: the image has no HTTP client; orchestrators probe /healthz themselves.
EXPOSE 4180 9180
ENTRYPOINT ["/usr/local/bin/sidegate"]
CMD ["run", "--config", "/etc/sidegate/sidegate.toml"]
