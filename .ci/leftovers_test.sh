#!/usr/bin/env bash
# Tests .ci/leftovers.sh as root: it must report a named namespace, a
# temporary directory and a process from the temporary directory made
# after the snapshot, and must not report those made before it.
#
#   bash .ci/leftovers_test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=${TMPDIR:-/tmp}

work=$(mktemp -d)
ns=afxdp-lt-$$-$RANDOM
dir=""
pid=""
cleanup() {
	set +e
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
	ip netns add "$ns"
	dir=$(mktemp -d "$tmp/afxdp-leftovers-test-XXXXXX")
	cp /bin/sleep "$dir/sleep"
	"$dir/sleep" 600 &
	pid=$!
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

# Made before the snapshot: the machine's own, never reported. (Other
# users of a shared machine may make something meanwhile: only ours are
# looked for.)
bash .ci/leftovers.sh snapshot "$work/after"
bash .ci/leftovers.sh check "$work/after" 2>"$work/out2" || true
if grep -qE "$ns|$dir|process: $pid " "$work/out2"; then
	fail "reported what the snapshot had: $(cat "$work/out2")"
fi

if bash .ci/leftovers.sh 2>/dev/null; then
	fail "no arguments accepted"
fi
echo PASS
