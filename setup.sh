#!/usr/bin/env bash
# Install what irctl and its test suite need on Debian 12 (run as root): the OCI runtime, the
# tools that validate exported images, a registry for push/pull tests, and the Python package.
set -euo pipefail
cd "$(dirname "$0")"
packages=(runc busybox-static docker-registry skopeo umoci uidmap fuse-overlayfs openssh-client git bubblewrap slirp4netns
          qemu-user-static binfmt-support postgresql)
# The arm64 test base is Debian's busybox-static:arm64 (apt-get download below): dpkg must know the
# architecture for apt to list its packages (the sources themselves are left as they are).
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
  missing_arm64_lists=1
fi
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ] || [ -n "${missing_arm64_lists:-}" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  [ ${#missing[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Steps of another architecture run under QEMU through binfmt_misc (tests/cli/test_multiplatform.py):
# mounted, with qemu-user-static's aarch64 handler registered (its F flag lets it work in containers).
binfmt=/proc/sys/fs/binfmt_misc
[ -e "$binfmt/status" ] || mount -t binfmt_misc binfmt_misc "$binfmt" \
  || echo "setup.sh: warning: could not mount binfmt_misc; arm64 tests cannot run" >&2
[ -e "$binfmt/qemu-aarch64" ] || update-binfmts --enable qemu-aarch64 \
  || echo "setup.sh: warning: could not register qemu-aarch64 with binfmt_misc" >&2
# The arm64 test base (tests/support/arm64.py reads the binary from here).
arm64=/var/cache/irctl-test/arm64
if [ ! -x "$arm64/busybox" ]; then
  mkdir -p "$arm64"
  (cd "$arm64" && apt-get download -qq -o APT::Sandbox::User=root busybox-static:arm64)
  rm -rf "$arm64/x" && dpkg-deb -x "$arm64"/busybox-static_*_arm64.deb "$arm64/x"
  cp "$arm64/x/bin/busybox" "$arm64/busybox.tmp" && mv "$arm64/busybox.tmp" "$arm64/busybox" && rm -rf "$arm64/x"
fi
# docker-registry's Debian package starts a system service on :5000; the tests start their own
# registries on free loopback ports, so the system one is not needed.
systemctl disable --now docker-registry >/dev/null 2>&1 || true
# Debian's postgresql package starts a system cluster; the farm tests make their own throwaway one
# (tests/support/buildgrid.py), so the system one is not needed either.
systemctl disable --now postgresql >/dev/null 2>&1 || true
# BuildGrid, the REAPI server the farm tests (tests/farm) run irctl's remote cache and execution against,
# in a venv of its own: it requires lark-parser, which would clobber irctl's lark. Pinned, with the
# PostgreSQL driver its scheduler needs, every dependency as tested (constraints.txt); checked by
# importing both, so a second run costs ~0.1 s.
buildgrid=${IRCTL_BUILDGRID:-/opt/irctl-buildgrid}
if ! "$buildgrid/bin/python" -c 'import importlib.metadata as m, psycopg2
assert m.version("buildgrid") == "0.4.4"' >/dev/null 2>&1; then
  python3 -m venv "$buildgrid"
  "$buildgrid/bin/pip" install -q --disable-pip-version-check -c examples/buildgrid/constraints.txt \
    buildgrid==0.4.4 psycopg2-binary
fi
# An unprivileged user with subordinate ids: tests/rootless run the same builds as this user.
id irctl-test >/dev/null 2>&1 || useradd -m -s /bin/sh irctl-test
grep -q '^irctl-test:' /etc/subuid || usermod --add-subuids 300000-365535 irctl-test
grep -q '^irctl-test:' /etc/subgid || usermod --add-subgids 300000-365535 irctl-test
# Rootless steps get their private network from slirp4netns, which opens /dev/net/tun: udev makes it 0666
# on a Debian system, but a machine without udev may have left it 0600.
[ -c /dev/net/tun ] && chmod 0666 /dev/net/tun
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
