#!/usr/bin/env bash
# Finds what the tests left behind on this machine.
#
#   .ci/leftovers.sh snapshot FILE   records what exists now (before the tests)
#   .ci/leftovers.sh check FILE      reports what exists now and did not then;
#                                    exit status 1 when anything did
#
# What it looks at: named network namespaces; runc containers with IDs
# afxdp-... (runc's default state directory); temporary files and
# directories whose names start with afxdp- or afxcmp- (the copies of test
# binaries that internal/container makes, the examples, hello images and
# runc layouts that TestMains build, CNI IPAM state, the C reference of
# bench/cmd/compare); processes that run a program from the temporary
# directory (test binaries, their copies, the examples, the C reference)
# or dpdk-testpmd: a leaked child, which may also hold an anonymous network
# namespace that no name shows; and XDP programs on links of the root
# namespace. What the machine had before the tests (its own XDP firewall,
# say) is not a leftover.
set -euo pipefail

tmp=${TMPDIR:-/tmp}

# Each line is KIND<TAB>NAME.
inventory() {
	ip netns list | awk '{ print "network namespace\t" $1 }'
	runc list -q | grep '^afxdp' | sed 's/^/runc container\t/' || true
	compgen -G "$tmp/afxdp-*" | sed 's/^/temporary file\t/' || true
	compgen -G "$tmp/afxcmp-*" | sed 's/^/temporary file\t/' || true
	local d exe comm
	for d in /proc/[0-9]*; do
		# A process may end between the glob and the reads.
		exe=$(readlink "$d/exe" 2>/dev/null) || continue
		comm=$(cat "$d/comm" 2>/dev/null) || continue
		if [[ "$exe" == "$tmp"/* || "$comm" == dpdk-testpmd ]]; then
			printf 'process\t%s %s\n' "${d#/proc/}" "$exe"
		fi
	done
	# A link with a program shows "mtu N xdp" (or xdpgeneric,
	# xdpoffload, xdpmulti) in ip's one-line output.
	ip -d -o link show | grep -E 'mtu [0-9]+ xdp(generic|offload|multi)? ' |
		awk -F': ' '{ print "XDP program on link\t" $2 }' || true
}

case "${1:-}:${2:-}" in
snapshot:?*)
	inventory | sort >"$2"
	;;
check:?*)
	# This script's own processes do not run from the temporary
	# directory, so they never show up here.
	left=$(comm -13 "$2" <(inventory | sort))
	if [[ -n "$left" ]]; then
		echo "left behind by the tests:" >&2
		echo "$left" | sed 's/\t/: /; s/^/  /' >&2
		exit 1
	fi
	;;
*)
	echo "usage: $0 snapshot|check FILE" >&2
	exit 2
	;;
esac
