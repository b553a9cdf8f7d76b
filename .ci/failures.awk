# Prints what each failed Go test wrote, from the output of `go test -v`
# (run as: awk -f .ci/failures.awk LOG LOG). CI shows only part of a long
# log; this summary at the end names the failed tests and their lines.
# Pass 1 collects the failed tests; pass 2 prints, for each of them, the
# last MAX lines written while it was the test being reported, then every
# panic, timeout and FAIL line.
BEGIN { MAX = 150 }
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
}
/^(panic:|fatal error:|FAIL|ok  |\*\*\* Test killed|make: \*\*\*)/ || /test timed out/ { tail[++t] = $0 }
END {
	for (i = 1; i <= n; i++) {
		name = order[i]
		print "---- " name " (" count[name] + 0 " lines; the last " MAX " at most)"
		from = count[name] > MAX ? count[name] - MAX + 1 : 1
		for (k = from; k <= count[name]; k++) print lines[name, k]
	}
	print "---- results"
	for (i = 1; i <= t; i++) print tail[i]
}
