package testnet

import "syscall"

// sysProcAttr makes the kernel kill a child if the test binary dies first,
// so an interrupted `go test` leaves no registry running. (Pdeathsig is tied
// to the OS thread that started the child; the Go runtime does not end
// threads that run ordinary goroutines, so this holds in practice.)
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
