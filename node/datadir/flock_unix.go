//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package datadir

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// errLocked: another open file description holds the lock.
var errLocked = errors.New("locked")

// flock takes an exclusive flock on f without waiting. Locks belong to the
// open file description, so two Locks in one process exclude each other
// too.
func flock(f *os.File) error {
	var err error
	for range 100 { // retried only when a signal interrupts the call
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EWOULDBLOCK):
			return errLocked
		case !errors.Is(err, unix.EINTR):
			return err
		}
	}
	return err
}

func funlock(f *os.File) error { return unix.Flock(int(f.Fd()), unix.LOCK_UN) }
