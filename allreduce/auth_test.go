package allreduce

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// refusals counts what endpoints refuse.
type refusals struct {
	mu  sync.Mutex
	why []string
}

func (r *refusals) add(_, why string) {
	r.mu.Lock()
	r.why = append(r.why, why)
	r.mu.Unlock()
}

func (r *refusals) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.why)
}

func newKeyedCluster(t *testing.T, keys [][]byte, rej *refusals) *cluster {
	t.Helper()
	c := &cluster{t: t}
	for _, k := range keys {
		ep, err := ListenWith(TCP{}, "127.0.0.1:0", ListenOptions{HandshakeTimeout: time.Second, Key: k, Refused: rej.add})
		if err != nil {
			t.Fatal(err)
		}
		c.eps = append(c.eps, ep)
	}
	t.Cleanup(c.close)
	return c
}

// forge opens a connection to addr and sends a hello for run "test" at
// generation gen, answering a challenge (if any) with garbage; the
// connection stays open until the test ends.
func forge(t *testing.T, addr string, gen uint64, readChallengeFirst bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if readChallengeFirst {
		c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := readChallenge(c); err != nil {
			t.Fatalf("no challenge: %v", err)
		}
	}
	msg := encodeHello(&hello{run: "test", generation: gen, from: 1, to: 0, size: 2, fromID: "m1", toID: "m0"})
	msg = append(msg, bytes.Repeat([]byte{7}, nonceSize+macSize)...)
	c.Write(msg)
}

func sumOnce(t *testing.T, rings []*Ring) {
	t.Helper()
	errs := parallel(rings, func(rank int, r *Ring) error {
		buf := []float32{float32(rank + 1), 2}
		if err := r.AllReduceSum(context.Background(), buf); err != nil {
			return err
		}
		n := float32(len(rings))
		if buf[0] != n*(n+1)/2 || buf[1] != 2*n {
			t.Errorf("rank %d: sum %v", rank, buf)
		}
		return nil
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// With a key, rings build and sum as before, while forged hellos far in
// the future (which would otherwise break every ring of the run) are
// refused unanswered.
func TestRingKeyRefusesForgedHandshakes(t *testing.T) {
	key := bytes.Repeat([]byte{1}, 32)
	rej := &refusals{}
	c := newKeyedCluster(t, [][]byte{key, key, key}, rej)
	rings := c.mustBuild(1, 3, nil)
	for _, ep := range c.eps {
		forge(t, ep.Addr(), 1<<62, true)
		forge(t, ep.Addr(), 2, true)
	}
	// A dialer that does not wait for the challenge.
	forge(t, c.eps[0].Addr(), 1<<62, false)
	deadline := time.Now().Add(5 * time.Second)
	for rej.count() < 7 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if rej.count() < 7 {
		t.Fatalf("%d refusals, want 7: %v", rej.count(), rej.why)
	}
	sumOnce(t, rings)
	for _, r := range rings {
		r.Close()
	}
	sumOnce(t, c.mustBuild(2, 3, nil))
}

func TestRingWrongKeyRefused(t *testing.T) {
	rej := &refusals{}
	c := newKeyedCluster(t, [][]byte{bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)}, rej)
	_, err := c.build(1, []int{0, 1}, func(cfg *Config) { cfg.ConnectTimeout = 500 * time.Millisecond })
	if err == nil {
		t.Fatal("a ring formed between endpoints with different keys")
	}
	var ge *GenerationError
	if errors.As(err, &ge) {
		t.Fatalf("wrong key reported as a generation change: %v", err)
	}
	if rej.count() == 0 {
		t.Fatal("no refusal reported")
	}
	// An endpoint without a key does not get in either.
	plain, err := Listen(TCP{}, "127.0.0.1:0", time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	c.eps = append(c.eps, plain)
	if _, err := c.build(1, []int{0, 2}, func(cfg *Config) { cfg.ConnectTimeout = 500 * time.Millisecond }); err == nil {
		t.Fatal("a ring formed between a keyed and an unkeyed endpoint")
	}
}

// Without a key the generation window still holds: a hello far ahead of
// what the endpoint knows is refused instead of aborting the next rings.
func TestRingGenerationWindow(t *testing.T) {
	rej := &refusals{}
	c := &cluster{t: t}
	for range 2 {
		ep, err := ListenWith(TCP{}, "127.0.0.1:0", ListenOptions{HandshakeTimeout: time.Second, Refused: rej.add})
		if err != nil {
			t.Fatal(err)
		}
		ep.Observe("test", 5)
		c.eps = append(c.eps, ep)
	}
	t.Cleanup(c.close)
	forge(t, c.eps[0].Addr(), 5+DefaultGenerationLead+1, false)
	deadline := time.Now().Add(5 * time.Second)
	for rej.count() < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if rej.count() != 1 {
		t.Fatalf("refusals %v, want one", rej.why)
	}
	sumOnce(t, c.mustBuild(6, 2, nil))
}

func TestListenWithShortKey(t *testing.T) {
	if _, err := ListenWith(TCP{}, "127.0.0.1:0", ListenOptions{Key: []byte("short")}); err == nil {
		t.Fatal("a 5-byte key was accepted")
	}
}
