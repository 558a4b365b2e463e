# The image deploy/k8s/ runs (ducktrace-demo:latest): ducktrace and the demo services.
#
#   docker build -t ducktrace-demo:latest .
#
# Stage 1 builds the workspace's release binaries; DuckDB and SQLite are compiled from their
# bundled C/C++ sources (the rust image brings gcc/g++), the gRPC contracts with protox (no
# protoc). Expect a long first build: DuckDB alone takes tens of minutes on two cores.
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --workspace --bins \
    && mkdir /out \
    && cp target/release/ducktrace \
          target/release/demo-registry \
          target/release/demo-auth \
          target/release/demo-user \
          target/release/demo-order \
          target/release/demo-inventory \
          target/release/demo-api-gateway \
          target/release/demo-loadgen \
          /out/

# Stage 2: the binaries on PATH, on the same Debian release (same glibc) as the build.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --create-home ducktrace
COPY --from=build /out/ /usr/local/bin/
# Not root; the manifests' fsGroup 10001 makes mounted volumes writable for this user.
USER 10001
WORKDIR /data
# OTLP gRPC, OTLP HTTP, UI/API of ducktrace; the services' gRPC; the gateway's REST.
EXPOSE 4317 4318 16686 50051 8080
CMD ["ducktrace", "serve", "--data-dir", "/data", "--otlp-grpc-addr", "0.0.0.0:4317", \
     "--otlp-http-addr", "0.0.0.0:4318", "--http-addr", "0.0.0.0:16686"]
