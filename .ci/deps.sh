#!/usr/bin/env bash
# Installs what the tests need: Go at least at go.mod's version, and the
# system packages: runc, the CNI reference plugins (/usr/lib/cni) and
# iproute2 for the container tests (internal/runc, internal/cni, e2e); gcc
# (with libc6-dev), which `go test -race` needs since the race detector
# uses cgo, and which with libxdp's and libbpf's headers builds the C
# reference receiver that bench/cmd/compare builds and tests; dpdk-dev for
# dpdk-testpmd, the peer whose counts bench/cmd/compare's tests check.
#
# Go: the first `go` in PATH, with /usr/local/go/bin put first as .ci/run
# does, must be go.mod's version or later. When there is none, or it is
# older, Go is downloaded from go.dev/dl into /usr/local/go (that needs
# network access to go.dev; CI machines already have Go there).
#
# Idempotent: when everything is installed it only checks and returns.
# Needs root (apt-get); CI runs it before the tests.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PATH="/usr/local/go/bin:$PATH"
sudo=()
if ((EUID != 0)); then
	sudo=(sudo)
fi

pkgs=(runc containernetworking-plugins iproute2 gcc libc6-dev libxdp-dev libbpf-dev dpdk-dev)

missing=()
for p in "${pkgs[@]}"; do
	if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]]; then
		missing+=("$p")
	fi
done

# apt_install installs packages, reading the package index first (once):
# a fresh machine's is empty or stale, and apt-get then cannot find the
# packages, or fetches versions the mirror no longer has.
apt_updated=0
apt_install() {
	export DEBIAN_FRONTEND=noninteractive
	if ((apt_updated == 0)); then
		if ! "${sudo[@]}" apt-get update -qq; then
			echo "deps: apt-get update failed (see above); needed to install $*" >&2
			exit 1
		fi
		apt_updated=1
	fi
	if ! "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null; then
		echo "deps: apt-get install $* failed (see above)" >&2
		exit 1
	fi
}

if ((${#missing[@]} > 0)); then
	echo "deps: installing ${missing[*]}"
	apt_install "${missing[@]}"
fi

# version_ge A B: whether Go version A (1.26.8) is B or later.
version_ge() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]; }

gowant=$(awk '$1 == "go" { print $2; exit }' "$root/go.mod")
gohave=""
if command -v go >/dev/null; then
	# Outside the module and with GOTOOLCHAIN=local: the installed
	# version, not one that go.mod would make it switch to.
	gohave=$(cd / && GOTOOLCHAIN=local go version | awk '{ sub(/^go/, "", $3); print $3 }')
fi
if [[ -z "$gohave" ]] || ! version_ge "$gohave" "$gowant"; then
	case "$(uname -m)" in
	x86_64) goarch=amd64 ;;
	aarch64) goarch=arm64 ;;
	*) echo "deps: Go $gowant or later needed; no download known for $(uname -m)" >&2; exit 1 ;;
	esac
	url="https://go.dev/dl/go$gowant.linux-$goarch.tar.gz"
	echo "deps: Go $gowant or later needed (found: ${gohave:-none}); installing $url into /usr/local/go"
	if ! command -v curl >/dev/null; then
		apt_install curl ca-certificates
	fi
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	if ! curl -fsSL --retry 3 -o "$tmp/go.tar.gz" "$url"; then
		echo "deps: could not download $url; install Go $gowant or later (https://go.dev/dl) into /usr/local/go" >&2
		exit 1
	fi
	"${sudo[@]}" rm -rf /usr/local/go
	"${sudo[@]}" tar -C /usr/local -xzf "$tmp/go.tar.gz"
	gohave=$(cd / && GOTOOLCHAIN=local go version | awk '{ sub(/^go/, "", $3); print $3 }')
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
echo "deps: Go $gohave, runc $(runc --version | awk 'NR==1{print $3}'), CNI plugins, iproute2, gcc, libxdp-dev, dpdk-testpmd present"
