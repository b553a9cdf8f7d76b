# Prints what each failed Go test wrote, from the output of `go test -v`
# (run as: awk -f .ci/failures.awk LOG LOG). CI shows only part of a long
# log, often its beginning and its end; this summary ends with what matters
# most, so that the end alone explains a failure.
# Pass 1 collects the failed tests; pass 2 keeps, for each of them, the last
# MAX lines written while it was the test being reported and its own
# messages (file.go:NN: lines that are neither node logs nor successful
# commands). Printed: each test's last lines, the panic, timeout and FAIL
# lines, then each failed test's last MSG messages.
BEGIN { MAX = 120; MSG = 25 }
FNR == NR {
	if (match($0, /--- FAIL: [^ ]+/)) {
		name = substr($0, RSTART + 10, RLENGTH - 10)
		if (!(name in failed)) { failed[name] = 1; order[++n] = name }
	}
	next
}
/^=== (RUN|CONT|NAME|PAUSE) / { owner = $3 }
owner in failed {
	k = ++count[owner]
	lines[owner, k] = $0
	if (k > MAX) delete lines[owner, k - MAX]
	if ($0 ~ /^    [^ ]+\.go:[0-9]+: / && $0 !~ /^    (handler|dirs)\.go:/ && $0 !~ /\[ok, [0-9.]+[µm]?s\]$/) {
		m = ++nmsg[owner]
		msgs[owner, m] = substr($0, 1, 400)
		if (m > MSG) delete msgs[owner, m - MSG]
	}
}
/^(panic:|fatal error:|FAIL|\*\*\* Test killed|make: \*\*\*)/ || /^--- FAIL/ || /test timed out/ { tail[++t] = $0 }
END {
	for (i = 1; i <= n; i++) {
		name = order[i]
		print "---- " name " (" count[name] + 0 " lines; the last " MAX " at most)"
		from = count[name] > MAX ? count[name] - MAX + 1 : 1
		for (k = from; k <= count[name]; k++) print lines[name, k]
	}
	print "---- panics, timeouts, failures"
	for (i = 1; i <= t; i++) print tail[i]
	for (i = 1; i <= n; i++) {
		name = order[i]
		print "---- " name ": its own messages (the last " MSG " at most)"
		from = nmsg[name] > MSG ? nmsg[name] - MSG + 1 : 1
		for (k = from; k <= nmsg[name]; k++) print msgs[name, k]
	}
}
