// Package datadir guards a node's data dir: one process at a time holds it
// (Lock), and the layouts of the stores in it are recorded so that a binary
// never opens a data dir written in a layout it does not understand
// (CheckFormat). Both run before anything else reads or writes the data
// dir:
//
//	<data dir>/
//	├── LOCK     held (flock) by the running process; says who it is
//	├── FORMAT   {"blobstore":1,"metadata":1,"written_by":"<version>"}
//	└── …        the stores (blobs/, uploads/, p2p/, meta/)
package datadir
