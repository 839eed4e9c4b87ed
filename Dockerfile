# syntax=docker/dockerfile:1
# keysetsync: static Go binary on distroless, running as non-root.
#   docker build -t keysetsync .
#   docker run --rm keysetsync version
#   docker compose up          # Kafka + playground + keysetsync run (docker-compose.yml)

FROM golang:1.26 AS build
WORKDIR /src
# Module downloads are cached in their own layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=linux go build -trimpath \
      -ldflags="-s -w -X main.version=${VERSION}" \
      -o /out/keysetsync ./cmd/keysetsync

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/keysetsync /usr/local/bin/keysetsync
# 65532:65532 is distroless' "nonroot" user.
USER 65532:65532
# The playground's port when run as `keysetsync playground --addr 0.0.0.0:5001`.
EXPOSE 5001
ENTRYPOINT ["/usr/local/bin/keysetsync"]
CMD ["run"]
