package runauth

import (
	"fmt"
	"net"
)

// CheckBind refuses, for a run without a secret, to bind addr (host:port)
// anywhere but on loopback: its channels are unauthenticated, so they must
// not be reachable from other machines. With a secret it accepts any
// address. what names the flag or channel in the error.
func CheckBind(s *Secret, what, addr string) error {
	if s != nil {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s %q: %w", what, addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s %q is not a loopback address, and this run has no secret (--secret-file or %s): %w",
			what, addr, EnvVar, ErrNoSecret)
	}
	return nil
}
