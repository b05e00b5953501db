#!/usr/bin/env bash
# Install what irctl and its test suite need on Debian 12 (run as root): the OCI runtime, the
# tools that validate exported images, a registry for push/pull tests, and the Python package.
set -euo pipefail
cd "$(dirname "$0")"
packages=(runc busybox-static docker-registry skopeo umoci uidmap fuse-overlayfs openssh-client git bubblewrap slirp4netns)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# docker-registry's Debian package starts a system service on :5000; the tests start their own
# registries on free loopback ports, so the system one is not needed.
systemctl disable --now docker-registry >/dev/null 2>&1 || true
# An unprivileged user with subordinate ids: tests/rootless run the same builds as this user.
id irctl-test >/dev/null 2>&1 || useradd -m -s /bin/sh irctl-test
grep -q '^irctl-test:' /etc/subuid || usermod --add-subuids 300000-365535 irctl-test
grep -q '^irctl-test:' /etc/subgid || usermod --add-subgids 300000-365535 irctl-test
# Rootless steps get their private network from slirp4netns, which opens /dev/net/tun: udev makes it 0666
# on a Debian system, but a machine without udev may have left it 0600.
[ -c /dev/net/tun ] && chmod 0666 /dev/net/tun
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
