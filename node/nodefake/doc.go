// Package nodefake has in-memory stand-ins for the parts a node is made of
// (node.Metadata, node.Transport, node.Providers, node.BlobStore), FOR
// TESTS ONLY: nothing here is durable, authenticated or bounded as
// production needs, and no production code may import it.
//
// A Network joins fake transports the way libp2p joins hosts; a Cluster
// holds one replicated metadata state that each member applies at its own
// pace, so a follower can lag its leader; a ProviderBook is a DHT every
// member sees at once; Blobs is a blob store in memory, with hooks that
// damage a blob. Each passes the same conformance suite as the real
// implementation (node's seams_test.go).
package nodefake
