//go:build !linux

package allreduce

import (
	"errors"
	"syscall"
)

const rawIO = false

func readRaw(rc syscall.RawConn, p []byte) error { return errors.ErrUnsupported }

func writeRaw(rc syscall.RawConn, a, b []byte) error { return errors.ErrUnsupported }
