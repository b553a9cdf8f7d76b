package testnet_test

import (
	"os"
	"testing"

	"github.com/meshreg/meshreg/testnet"
)

func TestMain(m *testing.M) { os.Exit(testnet.Main(m)) }
