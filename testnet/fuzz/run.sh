#!/bin/sh
# Runs every fuzz target of targets.txt for FUZZTIME (default 60s), one
# after another, with FUZZ_PARALLEL workers (default 1), and prints one
# summary line per target. A target that fails leaves its crasher in
# <package>/testdata/fuzz/<target>/ (go test prints the path and the
# command that replays it); the run goes on with the next target and exits
# 1 at the end. FUZZ_TARGETS='FuzzHandler FuzzFSMApply' runs only those.
#
# Usage: testnet/fuzz/run.sh   (from the module root; make fuzz does this)
set -u
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-60s}
FUZZ_PARALLEL=${FUZZ_PARALLEL:-1}
FUZZ_TARGETS=${FUZZ_TARGETS:-}
here=$(dirname "$0")
logdir=${FUZZ_LOGDIR:-fuzz-out}
mkdir -p "$logdir"
failed=""
summary=""
while read -r pkg target; do
	case "$pkg" in ''|'#'*) continue ;; esac
	if [ -n "$FUZZ_TARGETS" ]; then
		case " $FUZZ_TARGETS " in *" $target "*) ;; *) continue ;; esac
	fi
	log="$logdir/$target.log"
	echo "== $pkg $target for $FUZZTIME (log: $log)"
	if $GO test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -parallel "$FUZZ_PARALLEL" "$pkg" >"$log" 2>&1; then
		result=pass
	else
		result=FAIL
		failed="$failed $target"
	fi
	# The last progress line holds the totals: execs and new interesting.
	last=$(grep -E '^fuzz: elapsed' "$log" | tail -n 1)
	line="$result $pkg $target: ${last:-no progress line, see $log}"
	echo "$line"
	summary="$summary
$line"
	if [ "$result" = FAIL ]; then
		grep -E -- '--- FAIL|Failing input written to|go test -run=|panic:|\.go:[0-9]+:' "$log" | head -n 12
	fi
done <"$here/targets.txt"
echo
echo "== summary (FUZZTIME=$FUZZTIME)$summary"
if [ -n "$failed" ]; then
	echo "failed:$failed"
	exit 1
fi
