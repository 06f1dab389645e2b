#!/usr/bin/env bash
# Tests .ci/deps.sh as root, in a private mount namespace where Go is
# hidden (an empty /usr/local), with curl left out of PATH and with
# stand-ins for apt-get and curl first in it: the apt-get stand-in
# installs nothing until its index was updated, as on a fresh machine
# whose package index is empty or stale.
# The system's packages are neither installed nor removed.
#
#   bash .ci/deps_test.sh
set -euo pipefail
if [[ "${1:-}" != inside ]]; then
	exec unshare -m --propagation private bash "$0" inside
fi
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() {
	echo "FAIL: $*" >&2
	exit 1
}

gowant=$(awk '$1 == "go" { print $2; exit }' go.mod)
# A stand-in Go release: bin/go prints the version.
mkdir -p "$work/release/go/bin"
printf '#!/bin/sh\necho "go version go%s linux/amd64"\n' "$gowant" >"$work/release/go/bin/go"
chmod +x "$work/release/go/bin/go"
tar -C "$work/release" -czf "$work/go.tar.gz" go

mkdir -p "$work/bin"
# apt-get: logs its calls; "install" fails before an "update", then puts
# a curl stand-in into PATH when asked for curl.
cat >"$work/bin/apt-get" <<EOF
#!/bin/bash
echo "apt-get \$*" >>"$work/log"
case " \$* " in
*" update "*) [[ -e "$work/apt-fail-update" ]] && { echo "E: update failed" >&2; exit 100; }; touch "$work/updated" ;;
*" install "*)
	[[ -e "$work/updated" ]] || { echo "E: Unable to locate package" >&2; exit 100; }
	if [[ " \$* " == *" curl "* ]]; then
		cp "$work/curl" "$work/bin/curl"
	fi ;;
esac
EOF
# curl: "downloads" the stand-in release unless told to fail.
cat >"$work/curl" <<EOF
#!/bin/bash
echo "curl \$*" >>"$work/log"
[[ -e "$work/curl-fail" ]] && { echo "curl: (22) 404" >&2; exit 22; }
while (("\$#")); do [[ "\$1" == -o ]] && { cp "$work/go.tar.gz" "\$2"; exit 0; }; shift; done
exit 2
EOF
chmod +x "$work/bin/apt-get" "$work/curl"

# Hide the machine's Go (/usr/local/go), and its curl: PATH has every command of /usr/bin
# but curl (bash's command -v would name a curl made non-executable).
mount -t tmpfs none /usr/local
mkdir "$work/usrbin"
for f in /usr/bin/*; do
	[[ "$f" == /usr/bin/curl ]] || ln -s "$f" "$work/usrbin/"
done
export PATH="$work/bin:$work/usrbin:/usr/sbin"

reset() {
	umount /usr/local
	mount -t tmpfs none /usr/local
	rm -f "$work/bin/curl" "$work/log" "$work/updated" "$work/curl-fail" "$work/apt-fail-update"
	touch "$work/log"
}

# 1. No Go, no curl, stale index: the index is updated before curl is
# installed, and Go is installed.
reset
bash .ci/deps.sh >"$work/out" 2>&1 || fail "deps.sh with no Go and no curl: $(cat "$work/out")"
grep -q "^apt-get update" "$work/log" || fail "no apt-get update before installing curl: $(cat "$work/log")"
[[ "$(/usr/local/go/bin/go version)" == "go version go$gowant linux/amd64" ]] || fail "Go not installed"

# 2. Run again: nothing to do, no apt-get, no download.
rm -f "$work/log"
touch "$work/log"
bash .ci/deps.sh >"$work/out" 2>&1 || fail "second run: $(cat "$work/out")"
[[ ! -s "$work/log" ]] || fail "second run did something: $(cat "$work/log")"

# 3. The download fails: a clear error, and a nonzero status.
reset
touch "$work/curl-fail"
if bash .ci/deps.sh >"$work/out" 2>&1; then
	fail "deps.sh succeeded without Go"
fi
grep -q "^deps: could not download https://go.dev/dl/go$gowant" "$work/out" || fail "no clear message: $(cat "$work/out")"

# 4. apt-get update fails: a clear error, and a nonzero status.
reset
touch "$work/apt-fail-update"
if bash .ci/deps.sh >"$work/out" 2>&1; then
	fail "deps.sh succeeded without curl"
fi
grep -q "^deps: apt-get update failed" "$work/out" || fail "no clear message: $(cat "$work/out")"
echo PASS
