package clustertest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// GossipNet is an in-memory network for memberlist: each node gets a
// Transport with an address of its own (127.0.0.x:7946), packets are
// delivered through channels like datagrams (lost when the receiver is
// gone or its queue is full), streams are in-memory pipes. Faults are set
// on the whole network or per node and take effect at once: a node can be
// cut off (both directions), packets can be dropped at random and
// delayed, a node can be killed (it neither hears nor is heard, as a
// process that died without leaving), and arbitrary bytes can be injected
// as a forged packet or stream.
type GossipNet struct {
	mu     sync.Mutex
	nodes  map[string]*GossipTransport
	next   int
	rng    *rand.Rand
	drop   float64       // probability a packet is lost
	delay  time.Duration // packets wait up to this long
	cutOff map[string]bool
}

// NewGossipNet returns an empty network whose random packet losses and
// delays are drawn from seed.
func NewGossipNet(seed uint64) *GossipNet {
	return &GossipNet{nodes: map[string]*GossipTransport{}, rng: rand.New(rand.NewPCG(seed, 0x905519)), cutOff: map[string]bool{}}
}

// NewTransport adds a node to the network at a fresh address.
func (g *GossipNet) NewTransport() *GossipTransport {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.next++
	ip := net.IPv4(127, 0, byte(g.next/250), byte(1+g.next%250))
	return g.addLocked(ip, 7946)
}

// NewTransportAt adds a node at addr (ip:port), the address of a node
// that is gone: a process restarted at its old address.
func (g *GossipNet) NewTransportAt(addr string) *GossipTransport {
	host, ps, err := net.SplitHostPort(addr)
	ip := net.ParseIP(host)
	port, perr := strconv.Atoi(ps)
	if err != nil || ip == nil || perr != nil {
		panic(fmt.Sprintf("clustertest: NewTransportAt(%q): want ip:port", addr))
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.nodes[addr] != nil {
		panic(fmt.Sprintf("clustertest: NewTransportAt(%q): address in use", addr))
	}
	return g.addLocked(ip, port)
}

func (g *GossipNet) addLocked(ip net.IP, port int) *GossipTransport {
	t := &GossipTransport{net: g, ip: ip, port: port, addr: net.JoinHostPort(ip.String(), strconv.Itoa(port)),
		packets: make(chan *memberlist.Packet, 1024), streams: make(chan net.Conn, 64), done: make(chan struct{})}
	g.nodes[t.addr] = t
	return t
}

// SetLoss makes every packet be lost with probability p and wait a
// uniformly random time up to delay before delivery.
func (g *GossipNet) SetLoss(p float64, delay time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.drop, g.delay = p, delay
}

// CutOff partitions the node at addr from every other node (on) or heals
// the partition (off). Streams already open stay open.
func (g *GossipNet) CutOff(addr string, on bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if on {
		g.cutOff[addr] = true
	} else {
		delete(g.cutOff, addr)
	}
}

// Kill makes the node at addr vanish like a killed process: nothing more
// reaches it or leaves it, including the leave broadcast of its Close.
func (g *GossipNet) Kill(addr string) {
	g.mu.Lock()
	t := g.nodes[addr]
	delete(g.nodes, addr)
	g.mu.Unlock()
	if t != nil {
		t.kill()
	}
}

// Forge delivers b to the node at addr as a packet from from, which need
// not be a node of the network, and opens a stream to it that carries b
// too: what a process without the run's secret could send.
func (g *GossipNet) Forge(addr, from string, b []byte) error {
	g.mu.Lock()
	t := g.nodes[addr]
	g.mu.Unlock()
	if t == nil {
		return fmt.Errorf("forge to %s: no such node", addr)
	}
	fromAddr, err := net.ResolveUDPAddr("udp", from)
	if err != nil {
		return fmt.Errorf("forge from %q: %w", from, err)
	}
	t.deliver(&memberlist.Packet{Buf: append([]byte(nil), b...), From: fromAddr, Timestamp: time.Now()})
	local, remote := net.Pipe()
	if !t.accept(pipeConn{remote, fromAddr}) {
		local.Close()
		return nil
	}
	go func() {
		defer local.Close()
		_ = local.SetDeadline(time.Now().Add(2 * time.Second))
		_, _ = local.Write(b)
	}()
	return nil
}

// route decides the fate of a packet or dial from src to dst: the
// receiver, and the delay before delivery; nil when it is lost.
func (g *GossipNet) route(src, dst string, packet bool) (*GossipTransport, time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	to, from := g.nodes[dst], g.nodes[src]
	if to == nil || from == nil || g.cutOff[src] || g.cutOff[dst] {
		return nil, 0
	}
	if !packet {
		return to, 0
	}
	if g.drop > 0 && g.rng.Float64() < g.drop {
		return nil, 0
	}
	var d time.Duration
	if g.delay > 0 {
		d = time.Duration(g.rng.Int64N(int64(g.delay)))
	}
	return to, d
}

// GossipTransport is one node's memberlist.NodeAwareTransport on a
// GossipNet.
type GossipTransport struct {
	net     *GossipNet
	ip      net.IP
	port    int
	addr    string
	packets chan *memberlist.Packet
	streams chan net.Conn

	mu   sync.Mutex
	dead bool
	done chan struct{} // closed by Shutdown or Kill
}

var _ memberlist.NodeAwareTransport = (*GossipTransport)(nil)

// Addr is the node's gossip address.
func (t *GossipTransport) Addr() string { return t.addr }

func (t *GossipTransport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	return t.ip, t.port, nil
}

func (t *GossipTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *GossipTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	now := time.Now()
	if t.isDead() {
		return now, nil // a datagram from a dead process goes nowhere
	}
	to, delay := t.net.route(t.addr, a.Addr, true)
	if to == nil {
		return now, nil
	}
	p := &memberlist.Packet{Buf: append([]byte(nil), b...), From: &net.UDPAddr{IP: t.ip, Port: t.port}, Timestamp: now}
	if delay <= 0 {
		to.deliver(p)
	} else {
		time.AfterFunc(delay, func() { p.Timestamp = time.Now(); to.deliver(p) })
	}
	return now, nil
}

func (t *GossipTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

func (t *GossipTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *GossipTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if t.isDead() {
		return nil, errors.New("dial: transport is dead")
	}
	to, _ := t.net.route(t.addr, a.Addr, false)
	if to == nil {
		return nil, fmt.Errorf("dial %s: no route to host", a.Addr)
	}
	local, remote := net.Pipe()
	if !to.accept(pipeConn{remote, &net.TCPAddr{IP: t.ip, Port: t.port}}) {
		local.Close()
		return nil, fmt.Errorf("dial %s: connection refused", a.Addr)
	}
	return pipeConn{local, &net.TCPAddr{IP: to.ip, Port: to.port}}, nil
}

func (t *GossipTransport) StreamCh() <-chan net.Conn { return t.streams }

func (t *GossipTransport) Shutdown() error {
	t.kill()
	return nil
}

func (t *GossipTransport) kill() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.dead {
		t.dead = true
		close(t.done)
	}
}

func (t *GossipTransport) isDead() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.dead
}

// deliver queues a packet unless the node is dead or its queue is full.
func (t *GossipTransport) deliver(p *memberlist.Packet) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dead {
		return
	}
	select {
	case t.packets <- p:
	default:
	}
}

// accept queues an incoming stream; false when nobody will take it.
func (t *GossipTransport) accept(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dead {
		return false
	}
	select {
	case t.streams <- c:
		return true
	default:
		return false
	}
}

// pipeConn is one end of a net.Pipe that names its peer's address, which
// memberlist logs and checks.
type pipeConn struct {
	net.Conn
	remote net.Addr
}

func (c pipeConn) RemoteAddr() net.Addr { return c.remote }
