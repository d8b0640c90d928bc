package allreduce

import (
	"io"
	"os"
	"syscall"
	"unsafe"
)

// rawIO: the TCP data path reads and writes through syscall.RawConn with
// raw system calls (see readRaw).
const rawIO = true

// maxRawRead bounds one raw read, so that a call the scheduler does not see
// holds its P (and a stop-the-world) for a millisecond or so at most; a
// write is bounded by the socket's send buffer.
const maxRawRead = 4 << 20

// readRaw fills p from a non-blocking socket. The reads are raw system
// calls: a non-blocking read only copies what has arrived, so it never
// blocks, and making it without telling the scheduler keeps the P (and the
// thread) with this goroutine. Through conn.Read every read of a few
// hundred KiB outlasts a sysmon tick, so sysmon retakes the P, hands it to
// another thread and polls every 20µs; with one P per worker that churn
// cost about a tenth of the CPU. Waiting for data still parks the
// goroutine in the netpoller, under the connection's deadline.
func readRaw(rc syscall.RawConn, p []byte) error {
	off := 0
	var rerr error
	err := rc.Read(func(fd uintptr) bool {
		for off < len(p) {
			n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[off])), uintptr(min(len(p)-off, maxRawRead)))
			switch {
			case e == syscall.EINTR:
				continue
			case e == syscall.EAGAIN:
				return false
			case e != 0:
				rerr = os.NewSyscallError("read", e)
				return true
			case n == 0:
				rerr = io.EOF
				if off > 0 {
					rerr = io.ErrUnexpectedEOF
				}
				return true
			}
			off += int(n)
		}
		return true
	})
	if err != nil {
		return err
	}
	return rerr
}

// writeRaw writes a and then b to a non-blocking socket with raw writev
// calls (see readRaw), parking in the netpoller while the socket is full,
// until all is written or the write deadline passes.
func writeRaw(rc syscall.RawConn, a, b []byte) error {
	var werr error
	err := rc.Write(func(fd uintptr) bool {
		for len(a)+len(b) > 0 {
			var iov [2]syscall.Iovec
			k := 0
			for _, p := range [2][]byte{a, b} {
				if len(p) > 0 {
					iov[k].Base = &p[0]
					iov[k].SetLen(len(p))
					k++
				}
			}
			n, _, e := syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(k))
			switch {
			case e == syscall.EINTR:
				continue
			case e == syscall.EAGAIN:
				return false
			case e != 0:
				werr = os.NewSyscallError("writev", e)
				return true
			}
			if int(n) < len(a) {
				a = a[n:]
				continue
			}
			b = b[int(n)-len(a):]
			a = nil
		}
		return true
	})
	if err != nil {
		return err
	}
	return werr
}
