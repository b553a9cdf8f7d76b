# Reads the output of a failed `make test` (go test -v, one package at a
# time) and prints the end-to-end tests worth running once more, one line
# each: "./testnet TestName". It prints nothing, so nothing is rerun, unless
# the failure looks like a flake of the multi-process tests on this 2-CPU
# machine: only packages under testnet/ failed, each of them with at most
# MAX failed top-level tests (a regression usually breaks more), and no
# panic, timeout or build failure (those stop a whole package).
BEGIN { MAX = 3; ok = 1 }
/^--- FAIL: / { pending[++np] = $3 }
/^(panic:|fatal error:)/ || /test timed out/ || /\[(build|setup) failed\]/ { ok = 0 }
/^FAIL\t/ {
	pkg = $2
	if (pkg !~ /^github\.com\/meshreg\/meshreg\/testnet(\/|$)/ || np == 0 || np > MAX) ok = 0
	sub(/^github\.com\/meshreg\/meshreg/, ".", pkg)
	for (i = 1; i <= np; i++) rerun[++nr] = pkg " " pending[i]
	np = 0
}
/^ok  \t/ { np = 0 }
END {
	if (!ok || nr == 0) exit
	for (i = 1; i <= nr; i++) print rerun[i]
}
