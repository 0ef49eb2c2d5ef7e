#!/usr/bin/env bash
# Builds kube-apiserver, kubectl, etcd and aws-iam-authenticator from Go modules into a cache
# keyed by version (outside the repo), so only the first run on a machine pays for the build.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.sh"

BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd aws-iam-authenticator)
missing=
for b in "${BINARIES[@]}"; do [ -x "$GO_BIN_DIR/$b" ] || missing=1; done
[ -x "$KWOK_BIN_DIR/kwok" ] && [ -s "$KWOK_BIN_DIR/stages.yaml" ] || missing=1
[ -n "$missing" ] || exit 0
command -v go >/dev/null || { echo "build-go-tools: 'go' is not installed" >&2; exit 1; }
. "$here/progress.sh"
echo "build-go-tools: building the Kubernetes, EKS-auth and kwok binaries from Go modules, once per machine (about 15 minutes on 2 cores; cached in $CACHE_DIR/bin)" >&2
mkdir -p "$GO_BIN_DIR"
export GOFLAGS=-mod=mod CGO_ENABLED=0

if [ ! -x "$GO_BIN_DIR/aws-iam-authenticator" ]; then
  echo "build-go-tools: aws-iam-authenticator $IAM_AUTHENTICATOR_VERSION" >&2
  GOBIN="$GO_BIN_DIR" heartbeat "building aws-iam-authenticator" go install \
    "sigs.k8s.io/aws-iam-authenticator/cmd/aws-iam-authenticator@$IAM_AUTHENTICATOR_VERSION"
fi

if [ ! -x "$KWOK_BIN_DIR/kwok" ]; then
  mkdir -p "$KWOK_BIN_DIR"
  echo "build-go-tools: kwok $KWOK_VERSION" >&2
  GOBIN="$KWOK_BIN_DIR" heartbeat "building kwok" go install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
fi
if [ ! -s "$KWOK_BIN_DIR/stages.yaml" ]; then
  # kwok runs only the stages it is given: its own "fast" ones (a node that initialises and
  # heartbeats; pods that become ready, complete and go away on deletion), from its module.
  stages="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage"
  [ -d "$stages" ] || go mod download "sigs.k8s.io/kwok@$KWOK_VERSION"
  for f in node/fast/node-initialize.yaml node/heartbeat/node-heartbeat.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    echo "---"; cat "$stages/$f"
  done > "$KWOK_BIN_DIR/stages.yaml.tmp"
  mv "$KWOK_BIN_DIR/stages.yaml.tmp" "$KWOK_BIN_DIR/stages.yaml"
fi

# `go install k8s.io/kubernetes/cmd/...@v` is refused: k8s.io/kubernetes replaces its staging
# modules with local paths. A throwaway module that requires it and pins every staging module
# to the matching v0.Y.Z release builds the same binaries.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
staging_version="v0.${K8S_VERSION#v1.}"
echo "build-go-tools: downloading k8s.io/kubernetes $K8S_VERSION" >&2
gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
{
  echo "module post-signup/k8s-tools"
  echo
  grep -E '^go [0-9]' "$gomod"
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  grep -oE 'k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$gomod" \
    | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
} > "$work/go.mod"
cat > "$work/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
cd "$work"
go mod tidy -e >/dev/null 2>&1 || true
for target in k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl go.etcd.io/etcd/server/v3; do
  name=$(basename "$target"); [ "$name" = v3 ] && name=etcd
  [ -x "$GO_BIN_DIR/$name" ] && continue
  echo "build-go-tools: $name (kubernetes $K8S_VERSION)" >&2
  heartbeat "building $name" go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION" \
    -o "$GO_BIN_DIR/$name.tmp" "$target"
  mv "$GO_BIN_DIR/$name.tmp" "$GO_BIN_DIR/$name"
done
