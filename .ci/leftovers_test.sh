#!/usr/bin/env bash
# Tests .ci/leftovers.sh as root: it must report a named namespace, a
# temporary directory, a process from the temporary directory and a mount
# made after the snapshot, and a sysctl changed after it, and must not
# report those made before it.
#
#   bash .ci/leftovers_test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=${TMPDIR:-/tmp}

work=$(mktemp -d)
ns=afxdp-lt-$$-$RANDOM
dir=""
pid=""
mnt=""
cleanup() {
	set +e
	[[ -n "$mnt" ]] && umount "$mnt"
	if [[ -n "$pid" ]]; then
		kill "$pid"
		wait "$pid"
	fi 2>/dev/null
	ip netns del "$ns" 2>/dev/null
	[[ -n "$dir" ]] && rm -rf "$dir"
	rm -rf "$work"
}
trap cleanup EXIT
fail() {
	echo "FAIL: $*" >&2
	exit 1
}

leak() {
	# Named as `ip netns add` names one, without what that does first on
	# a machine that never had one: turn /run/netns into a shared mount
	# of itself, which would stay.
	mkdir -p /run/netns
	touch "/run/netns/$ns"
	unshare --net="/run/netns/$ns" true
	dir=$(mktemp -d "$tmp/afxdp-leftovers-test-XXXXXX")
	cp /bin/sleep "$dir/sleep"
	"$dir/sleep" 600 &
	pid=$!
	mkdir "$work/mnt"
	mount -t tmpfs afxdp-leftovers-test "$work/mnt"
	mnt=$work/mnt
}

# Made after the snapshot: each is reported, and the check fails.
bash .ci/leftovers.sh snapshot "$work/before"
leak
if bash .ci/leftovers.sh check "$work/before" 2>"$work/out"; then
	fail "check passed with leftovers"
fi
grep -q "network namespace: $ns\$" "$work/out" || fail "namespace $ns not reported: $(cat "$work/out")"
grep -q "temporary file: $dir\$" "$work/out" || fail "$dir not reported: $(cat "$work/out")"
grep -q "process: $pid $dir/sleep\$" "$work/out" || fail "process $pid not reported: $(cat "$work/out")"
grep -q "mount: $mnt (tmpfs)\$" "$work/out" || fail "mount $mnt not reported: $(cat "$work/out")"

# Made before the snapshot: the machine's own, never reported. (Other
# users of a shared machine may make something meanwhile: only ours are
# looked for.)
bash .ci/leftovers.sh snapshot "$work/after"
bash .ci/leftovers.sh check "$work/after" 2>"$work/out2" || true
if grep -qE "$ns|$dir|process: $pid |$mnt" "$work/out2"; then
	fail "reported what the snapshot had: $(cat "$work/out2")"
fi

# A sysctl a test changed and did not set back (ip_forward, which the CNI
# plugins set) is reported with its value. It is changed in a network
# namespace of its own, so that nothing else on the machine sees it.
unshare --net bash -euc '
	bash .ci/leftovers.sh snapshot "$1/sysctl-before"
	v=$(cat /proc/sys/net/ipv4/ip_forward)
	echo $((1 - v)) >/proc/sys/net/ipv4/ip_forward
	if bash .ci/leftovers.sh check "$1/sysctl-before" 2>"$1/sysctl-out"; then
		echo "check passed with net.ipv4.ip_forward changed" >"$1/sysctl-out"
		exit 1
	fi
	grep -q "sysctl: net.ipv4.ip_forward = $((1 - v)) (was $v)\$" "$1/sysctl-out"
' sh "$work" || fail "changed net.ipv4.ip_forward not reported: $(cat "$work/sysctl-out")"

if bash .ci/leftovers.sh 2>/dev/null; then
	fail "no arguments accepted"
fi
echo PASS
