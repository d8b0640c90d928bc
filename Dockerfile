# syntax=docker/dockerfile:1
#
# The sbtrain image: the one binary, linked with OpenBLAS, on a slim Debian
# that carries only OpenBLAS's runtime. It runs as the non-root user 65532
# and writes nothing outside /tmp (mount an emptyDir there; the manifests in
# k8s/ do), so it works with a read-only root filesystem.
#
#   make image                      # docker build -t sbtrain:dev .
#   docker run --rm sbtrain:dev --help

FROM golang:1.26-bookworm AS build
RUN apt-get update \
	&& apt-get install -y --no-install-recommends libopenblas-dev \
	&& rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/root/go/pkg/mod go mod download
COPY . .
# The build context has no .git: the version comes from make image.
ARG VERSION=dev
RUN --mount=type=cache,target=/root/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
	make build VERSION="$VERSION" BIN=out/sbtrain \
	&& ldd out/sbtrain | grep -q libopenblas

FROM debian:bookworm-slim
# libopenblas0 is the runtime of the libopenblas-dev the binary linked
# (it brings libgfortran5); ca-certificates for an S3 endpoint over TLS.
RUN apt-get update \
	&& apt-get install -y --no-install-recommends libopenblas0 ca-certificates \
	&& rm -rf /var/lib/apt/lists/* \
	&& groupadd --gid 65532 sbtrain \
	&& useradd --uid 65532 --gid 65532 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin sbtrain
COPY --from=build /src/out/sbtrain /usr/local/bin/sbtrain
ENV HOME=/tmp TMPDIR=/tmp
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["/usr/local/bin/sbtrain"]
CMD ["--help"]
