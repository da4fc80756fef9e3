# totpgate image: a static binary on distroless, running as non-root.
#   docker build -t ghcr.io/totpgate/totpgate:$(git describe --tags) .
# The build stage is the only place Go runs; the image holds one file.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# CGO off: SQLite is modernc's pure-Go driver, so the binary needs no libc.
# cmd/totpgate's TestStaticBinary builds it the same way and checks it.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/totpgate ./cmd/totpgate

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/totpgate /usr/local/bin/totpgate
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/totpgate"]
CMD ["serve"]
