#!/usr/bin/env bash
# Builds dist/agentd_<version>_<arch>.deb with nfpm (from the Go module proxy).
# Usage: scripts/package.sh [OUTDIR]   (VERSION, ARCH from the environment)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}
export VERSION=${VERSION:-0.0.0~dev}
export ARCH=${ARCH:-amd64}
mkdir -p "$out"
# nfpm does not expand variables in source paths: the binary goes to a fixed one.
BINARY=dist/pkg/agentd
mkdir -p dist/pkg
CGO_ENABLED=0 GOOS=linux GOARCH=$ARCH go build -trimpath \
  -ldflags "-s -w -X github.com/agentlab/terraform-provider-agentlab/internal/version.Version=$VERSION" \
  -o "$BINARY" ./agentd
go run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2 package --config packaging/nfpm.yaml --packager deb --target "$out/"
rm -f "$BINARY"
ls "$out"/agentd_*.deb
