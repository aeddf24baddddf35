#!/usr/bin/env bash
# Debian packages the full test suite uses: the lab (iproute2, nftables), the end-to-end
# alerting tests (prometheus, prometheus-alertmanager), the benchmarks' reference
# (prometheus-blackbox-exporter; `make bench`) and their floor in C (gcc, libssl-dev),
# `docker-compose config` for deploy/compose/ (it only parses: no engine needed), chromium
# for the status page's browser tests, and podman with debootstrap to build and run the
# container image. Installs only what is missing; needs root and apt-get.
# Without root it says what is missing and exits 0: those tests then skip with a message.
set -euo pipefail

declare -A wanted=(
  [make]=make [ip]=iproute2 [nft]=nftables [unshare]=util-linux
  [prometheus]=prometheus [promtool]=prometheus [prometheus-alertmanager]=prometheus-alertmanager
  [amtool]=prometheus-alertmanager [prometheus-blackbox-exporter]=prometheus-blackbox-exporter
  [docker-compose]=docker-compose [setpriv]=util-linux [chromium]=chromium
  [taskset]=util-linux  # bench/: pins each exporter to one core
  [cc]=gcc  # bench/floor_openssl.c: the floor in C (and libssl-dev's headers, below)
  # tests/deploy/test_image.py: builds and runs the Dockerfile on a locally bootstrapped base;
  # with runc, not the crun podman pulls in, which refuses this host's hybrid cgroups
  # (tests/deploy/containers.conf)
  [podman]=podman [debootstrap]=debootstrap [runc]=runc
)
missing=()
for command in "${!wanted[@]}"; do
  command -v "$command" >/dev/null 2>&1 || missing+=("${wanted[$command]}")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
[ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
[ ${#missing[@]} -eq 0 ] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "note: not installing ${missing[*]} (needs root and apt-get); the tests that need them will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
