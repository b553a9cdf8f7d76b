// Package testnet starts real meshreg processes and drives them with real
// clients: the end-to-end tests of the registry, and the pieces the
// benchmark in testnet/bench shares with them.
//
// The harness builds ./cmd/meshreg once per test binary and starts each
// node as `meshreg serve --listen 127.0.0.1:PORT --data-dir DIR
// --log-format json` on a free port with its own data dir, waiting for
// /readyz:
//
//	func TestMain(m *testing.M) { os.Exit(testnet.Main(m)) }
//
//	func TestSomething(t *testing.T) {
//		n := testnet.StartNode(t, testnet.Options{})
//		// n.URL(), n.Host(); n.Stop() (SIGTERM), n.Kill() (SIGKILL), n.Restart()
//	}
//
// A node's stdout and stderr go to a log file; when a test fails, the tail
// of the log is printed and the node's directory is kept for inspection.
//
// The tests in this package (go test ./testnet/...) check what a user
// would: the OCI distribution-spec conformance suite, crane, oras and
// Docker engine round trips, and a SIGKILL in the middle of a 512 MiB
// upload. They find crane, oras and conformance in PATH (or in the
// repository's .tools/bin, where `make tools` installs them).
//
// Environment:
//
//	MESHREG_E2E_REGISTRY=host:port  run the client tests against that running
//	                                registry (tests that kill or restart a node skip)
//	MESHREG_E2E_BIN=path            use this meshreg binary instead of building one
//	MESHREG_E2E_KEEP=1              keep every test's directories, not only failed ones'
//	MESHREG_E2E_DIR=dir             where those directories go (default: the temp dir)
//	MESHREG_E2E_READY_PATH=/path    readiness path polled after a start (default /readyz)
//	MESHREG_E2E_OCI_VERSION=dev     conformance at another spec version (report only)
//	MESHREG_E2E_CONFORMANCE_REPORT_ONLY=1  report conformance counts without failing
//	MESHREG_E2E_OCI_FILTER=prefix   run only some conformance tests (report only)
//	REQUIRE_DOCKER=1                fail, not skip, when no Docker daemon answers
//	REQUIRE_CHROMIUM=1              fail, not skip, when chromium is not in PATH
//	MESHREG_E2E_SCREENSHOT=file.png keep the status page test's screenshot there
//
// With -short every end-to-end test skips; the harness's own unit tests
// still run.
package testnet
