# Portcullis container image. The build stage mirrors CI (.ci/run): Debian, cmake for Pingora's
# zlib-ng, a locked release build. The runtime stage is a slim Debian with a non-root user.

FROM rust:1.95-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake pkg-config build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY examples ./examples
RUN cargo build --locked --release --bin portcullis

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin portcullis \
 && mkdir -p /etc/portcullis
COPY --from=build /src/target/release/portcullis /usr/local/bin/portcullis
COPY examples/echo.yaml /etc/portcullis/portcullis.yaml
ENV PORTCULLIS_CONFIG=/etc/portcullis/portcullis.yaml \
    PORTCULLIS_LISTEN=0.0.0.0:8080 \
    PORTCULLIS_ADMIN_LISTEN=0.0.0.0:9901 \
    PORTCULLIS_LOG_FORMAT=json
USER 10001:10001
# 8080 proxy (HTTP), 8443 proxy (HTTPS, when configured), 9901 admin (/healthz /readyz /metrics)
EXPOSE 8080 8443 9901
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve"]
