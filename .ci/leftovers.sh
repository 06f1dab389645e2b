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
# namespace that no name shows; XDP programs on links of the root
# namespace; mounts (a bpffs, tracefs or debugfs that one test mounts and
# leaves makes the tests after it pass on this machine and fail on a fresh
# one); and the sysctls below, which the tests' tools set (the CNI plugins
# set ip_forward) or which decide what the tests can do. What the machine
# had before the tests (its own XDP firewall, say) is not a leftover.
set -euo pipefail

tmp=${TMPDIR:-/tmp}

sysctls=(
	net.ipv4.ip_forward net.ipv6.conf.all.forwarding
	net.core.bpf_jit_enable kernel.bpf_stats_enabled kernel.unprivileged_bpf_disabled
	kernel.perf_event_paranoid net.core.busy_poll net.core.busy_read
	net.core.netdev_max_backlog vm.nr_hugepages
)

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
	# proc_pid_mountinfo(5): the mount point is field 5, the file
	# system type follows the " - " separator. A named namespace's
	# mount is reported as the namespace.
	awk '{
		for (i = 7; $i != "-"; i++) {}
		if ($(i + 1) == "nsfs" && $5 ~ "^/(var/)?run/netns/") next
		print "mount\t" $5 " (" $(i + 1) ")"
	}' /proc/self/mountinfo
	local s v
	for s in "${sysctls[@]}"; do
		v=$(cat "/proc/sys/${s//.//}" 2>/dev/null) || continue
		printf 'sysctl\t%s = %s\n' "$s" "$v"
	done
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
		# A changed sysctl says what it was.
		awk -F'\t' 'FNR == NR {
			if ($1 == "sysctl") { split($2, kv, " = "); was[kv[1]] = kv[2] }
			next
		}
		{
			line = $1 ": " $2
			if ($1 == "sysctl") { split($2, kv, " = "); line = line " (was " was[kv[1]] ")" }
			print "  " line
		}' "$2" - <<<"$left" >&2
		exit 1
	fi
	;;
*)
	echo "usage: $0 snapshot|check FILE" >&2
	exit 2
	;;
esac
