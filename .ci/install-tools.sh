#!/usr/bin/env bash
# Installs the deploy-side validators the tests use, into a cache shared by all checkouts:
#   promtool             the binary only, out of Debian's `prometheus` package (`go install` of
#                        promtool is refused by Go: the prometheus go.mod has replace directives)
#   helm                 built with `go install`, with the release's ldflags so that it reports
#                        its version and defaults to the Kubernetes version of its client-go
#   kubernetes-validate  from PyPI, in its own venv (it ships Kubernetes' JSON schemas offline)
# Each tool is skipped when its pinned version is already there. Any failure fails the script:
# the tests that need these tools never skip.
#
# Usage: .ci/install-tools.sh            → $BRIDGE_CACHE_DIR/tools (default ~/.cache/bridge/tools)
# Prints the bin directory on the last line.
set -euo pipefail

HELM_VERSION=v3.21.4
HELM_K8S_MINOR=36            # client-go v0.36 in helm v3.21.4
KUBERNETES_VALIDATE_VERSION=1.37.0

cache="${BRIDGE_CACHE_DIR:-$HOME/.cache/bridge}"
tools="$cache/tools"
bin="$tools/bin"
mkdir -p "$bin"

log() { echo "install-tools: $*" >&2; }
timed() {  # timed <label> <command...>: run, then report the wall-clock seconds
  local label=$1 start=$SECONDS; shift
  "$@"
  log "$label installed in $((SECONDS - start)) s"
}

install_promtool() {
  local work; work=$(mktemp -d)
  # A download with stale package lists fails (superseded versions are gone): refresh, retry.
  if ! (cd "$work" && apt-get download -qq prometheus >/dev/null 2>&1); then
    apt-get update -qq >&2
    (cd "$work" && apt-get download -qq prometheus >/dev/null 2>&1) \
      || { log "apt-get download prometheus failed"; rm -rf "$work"; return 1; }
  fi
  dpkg-deb --fsys-tarfile "$work"/prometheus_*.deb | tar -xO ./usr/bin/promtool >"$bin/promtool.tmp"
  chmod +x "$bin/promtool.tmp"
  mv "$bin/promtool.tmp" "$bin/promtool"
  rm -rf "$work"
}

install_helm() {
  command -v go >/dev/null || { log "go is required to build helm"; return 1; }
  local ld="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" p
  for p in pkg/lint/rules pkg/chartutil; do
    ld="$ld -X helm.sh/helm/v3/$p.k8sVersionMajor=1 -X helm.sh/helm/v3/$p.k8sVersionMinor=$HELM_K8S_MINOR"
  done
  # GOFLAGS on the command line replaces the environment's: keep -buildvcs=false in it.
  GOFLAGS="-buildvcs=false" GOBIN="$bin" go install -ldflags "$ld" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

install_kubernetes_validate() {
  rm -rf "$tools/kv-venv"
  python3 -m venv "$tools/kv-venv"
  "$tools/kv-venv/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  ln -sf "$tools/kv-venv/bin/kubernetes-validate" "$bin/kubernetes-validate"
}

if ! "$bin/promtool" --version >/dev/null 2>&1; then
  timed promtool install_promtool
fi
if ! "$bin/helm" version --short 2>/dev/null | grep -qx "$HELM_VERSION+g\?.*\|$HELM_VERSION"; then
  timed helm install_helm
fi
if ! "$bin/kubernetes-validate" --version 2>/dev/null | grep -q "$KUBERNETES_VALIDATE_VERSION"; then
  timed kubernetes-validate install_kubernetes_validate
fi

# Prove each one runs; a broken tool fails here, not halfway through the tests.
log "$("$bin/promtool" --version 2>&1 | head -1)"
log "helm $("$bin/helm" version --short)"
log "kubernetes-validate $("$bin/kubernetes-validate" --version 2>&1 | tail -1)"
echo "$bin"
