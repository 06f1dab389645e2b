#!/usr/bin/env bash
# Installs the system packages the tests need: runc, the CNI reference
# plugins (/usr/lib/cni) and iproute2 for the container tests (internal/runc,
# internal/cni); gcc with libxdp's and libbpf's headers for the C reference
# receiver that bench/cmd/compare builds and tests; dpdk-dev for
# dpdk-testpmd, the peer whose counts bench/cmd/compare's tests check.
# Idempotent: when everything is installed it only checks and returns.
# Needs root (apt-get); CI runs it before the tests.
set -euo pipefail

pkgs=(runc containernetworking-plugins iproute2 gcc libc6-dev libxdp-dev libbpf-dev dpdk-dev)

missing=()
for p in "${pkgs[@]}"; do
	if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]]; then
		missing+=("$p")
	fi
done

if ((${#missing[@]} > 0)); then
	echo "deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	sudo=()
	if ((EUID != 0)); then
		sudo=(sudo)
	fi
	"${sudo[@]}" apt-get update -qq
	"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Check what the tests use, not only what dpkg says.
for f in /usr/sbin/runc /usr/lib/cni/ptp /usr/lib/cni/bridge /usr/lib/cni/macvlan \
	/usr/lib/cni/ipvlan /usr/lib/cni/host-local; do
	if [[ ! -x "$f" ]]; then
		echo "deps: $f missing after install" >&2
		exit 1
	fi
done
command -v ip >/dev/null || { echo "deps: ip (iproute2) missing" >&2; exit 1; }
command -v gcc >/dev/null || { echo "deps: gcc missing" >&2; exit 1; }
command -v dpdk-testpmd >/dev/null || { echo "deps: dpdk-testpmd (dpdk-dev) missing" >&2; exit 1; }
[[ -f /usr/include/xdp/xsk.h ]] || { echo "deps: libxdp-dev headers missing" >&2; exit 1; }
echo "deps: runc $(runc --version | awk 'NR==1{print $3}'), CNI plugins, iproute2, gcc, libxdp-dev, dpdk-testpmd present"
