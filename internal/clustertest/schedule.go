package clustertest

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sbtrain/sbtrain/allreduce"
	"github.com/sbtrain/sbtrain/api"
)

// FaultKind is what goes wrong.
type FaultKind int

const (
	// Kill a trainer (when more than one is live), optionally starting a
	// new one in its place.
	Kill FaultKind = iota
	// PartitionTrainer cuts a trainer's gossip off from everyone for Dur.
	PartitionTrainer
	// PartitionCoordinator cuts the coordinator's gossip off for Dur.
	PartitionCoordinator
	// GossipLoss drops each gossip packet with probability Loss and
	// delays the rest up to Delay, for Dur.
	GossipLoss
	// RingFault installs Ring on the links between two trainers (both
	// directions) for Dur; it bites on the connections dialed meanwhile,
	// i.e. when a new generation forms.
	RingFault
	// ForgeRing opens a ring connection to a trainer and sends a hello of
	// the run at a generation far ahead, with a MAC that is garbage.
	ForgeRing
	// ForgeGossip sends random bytes to a node's gossip, as a packet and
	// as a stream.
	ForgeGossip
	// ForgeGRPC calls the coordinator's Report without the run's
	// credentials, for a live trainer, at a generation near 2^64.
	ForgeGRPC
	numFaultKinds
)

var faultNames = [...]string{"kill", "partition-trainer", "partition-coordinator", "gossip-loss", "ring-fault",
	"forge-ring", "forge-gossip", "forge-grpc"}

func (k FaultKind) String() string {
	if k >= 0 && int(k) < len(faultNames) {
		return faultNames[k]
	}
	return fmt.Sprintf("fault(%d)", int(k))
}

// Event is one fault of a schedule.
type Event struct {
	// At is the progress (Cluster.Progress) that triggers it.
	At     int64
	Kind   FaultKind
	Target int // picks the trainer: index into the live ones, modulo
	Dur    time.Duration
	// Replace starts a new trainer after a Kill.
	Replace bool
	Loss    float64
	Delay   time.Duration
	Ring    allreduce.Fault
}

func (e Event) String() string {
	s := fmt.Sprintf("at %d %s target %d", e.At, e.Kind, e.Target)
	switch e.Kind {
	case Kill:
		if e.Replace {
			s += " replaced"
		}
	case PartitionTrainer, PartitionCoordinator:
		s += fmt.Sprintf(" for %s", e.Dur)
	case GossipLoss:
		s += fmt.Sprintf(" loss %.2f delay %s for %s", e.Loss, e.Delay, e.Dur)
	case RingFault:
		s += fmt.Sprintf(" %+v for %s", e.Ring, e.Dur)
	}
	return s
}

// Schedule is a seeded list of faults.
type Schedule struct {
	Seed   uint64
	Events []Event
}

func (s Schedule) String() string {
	parts := make([]string, len(s.Events))
	for i, e := range s.Events {
		parts[i] = e.String()
	}
	return fmt.Sprintf("seed %d: %s", s.Seed, strings.Join(parts, "; "))
}

// NewSchedule draws one to four faults from seed, triggered at random
// points of a run of total steps. The same seed gives the same schedule.
func NewSchedule(seed uint64, total int64) Schedule {
	r := rand.New(rand.NewPCG(seed, 0x5b7a1))
	s := Schedule{Seed: seed}
	for range 1 + r.IntN(4) {
		// From step 1: before the first step the coordinator still waits
		// for all its first members, and a kill then would leave it
		// waiting for ever (as it should).
		e := Event{At: 1 + r.Int64N(max(1, total-2)), Kind: FaultKind(r.IntN(int(numFaultKinds))), Target: r.IntN(16)}
		switch e.Kind {
		case Kill:
			e.Replace = r.IntN(2) == 0
		case PartitionTrainer, PartitionCoordinator:
			// Shorter than failure detection, or long enough to be
			// declared dead and rejoin.
			e.Dur = time.Duration(200+r.IntN(2300)) * time.Millisecond
		case GossipLoss:
			e.Loss, e.Delay = 0.05+0.3*r.Float64(), time.Duration(r.IntN(40))*time.Millisecond
			e.Dur = time.Duration(500+r.IntN(2000)) * time.Millisecond
		case RingFault:
			// No Corrupt: a flipped payload bit is what TCP's checksum
			// stops on the wire, and the trainer's rings run without
			// allreduce's PayloadChecksum, so it would pass into the
			// sums (one replica diverged that way in 150 schedules).
			n := 1 + r.IntN(6)
			switch r.IntN(5) {
			case 0:
				e.Ring.Drop = n
			case 1:
				e.Ring.Truncate = n
			case 2:
				e.Ring.Cut = n
			case 3:
				e.Ring.Stall = n
			default:
				e.Ring.Delay = time.Duration(1+r.IntN(3)) * time.Millisecond
			}
			e.Dur = time.Duration(300+r.IntN(1500)) * time.Millisecond
		}
		s.Events = append(s.Events, e)
	}
	slices.SortStableFunc(s.Events, func(a, b Event) int { return int(a.At - b.At) })
	return s
}

// Play injects the schedule's faults as the run reaches their points, in
// the background; the returned function stops it (faults it healed later
// are healed at once) and returns the events that fired.
func (c *Cluster) Play(s Schedule) (stop func() []Event) {
	quit := make(chan struct{})
	var fired []Event
	var wg sync.WaitGroup
	var healers sync.WaitGroup
	heal := make(chan struct{}) // closed to heal every pending fault now
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for _, e := range s.Events {
			for c.Progress() < e.At {
				select {
				case <-quit:
					return
				case <-tick.C:
				}
			}
			if undo := c.inject(e); undo != nil {
				healers.Add(1)
				go func() {
					defer healers.Done()
					select {
					case <-time.After(e.Dur):
					case <-heal:
					}
					undo()
				}()
			}
			fired = append(fired, e)
		}
	}()
	return func() []Event {
		close(quit)
		wg.Wait()
		close(heal)
		healers.Wait()
		return fired
	}
}

// inject applies one fault and returns what heals it (nil: nothing to).
func (c *Cluster) inject(e Event) (undo func()) {
	live := c.Live()
	var tr *Trainer
	if len(live) > 0 {
		tr = c.Trainer(live[e.Target%len(live)])
	}
	c.log.Info("harness: fault", "event", e.String())
	switch e.Kind {
	case Kill:
		if len(live) < 2 {
			return nil
		}
		c.Kill(tr.ID)
		if e.Replace {
			c.AddTrainer()
		}
	case PartitionTrainer:
		if tr == nil {
			return nil
		}
		c.Gossip.CutOff(tr.GossipAddr(), true)
		return func() { c.Gossip.CutOff(tr.GossipAddr(), false) }
	case PartitionCoordinator:
		addr := c.CoordinatorGossip()
		c.Gossip.CutOff(addr, true)
		return func() { c.Gossip.CutOff(addr, false) }
	case GossipLoss:
		c.Gossip.SetLoss(e.Loss, e.Delay)
		return func() { c.Gossip.SetLoss(0, 0) }
	case RingFault:
		if len(live) < 2 {
			return nil
		}
		other := c.Trainer(live[(e.Target+1)%len(live)])
		a, b := tr.RingAddr(), other.RingAddr()
		c.Ring.SetFault(a, b, e.Ring)
		c.Ring.SetFault(b, a, e.Ring)
		return func() {
			c.Ring.SetFault(a, b, allreduce.Fault{})
			c.Ring.SetFault(b, a, allreduce.Fault{})
		}
	case ForgeRing:
		if tr != nil {
			c.forgeRing(tr.RingAddr())
		}
	case ForgeGossip:
		target := c.CoordinatorGossip()
		if tr != nil && e.Target%2 == 1 {
			target = tr.GossipAddr()
		}
		b := make([]byte, 64+e.Target*16)
		r := rand.New(rand.NewPCG(uint64(e.At), uint64(e.Target)))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		_ = c.Gossip.Forge(target, "127.0.9.9:7946", b)
	case ForgeGRPC:
		if tr != nil {
			c.forgeGRPC(tr.ID)
		}
	}
	return nil
}

// The ring hello's wire format (allreduce's handshake): what a forger
// who read the source would send.
const (
	helloMagic   = 0x49484253
	helloVersion = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// forgeRing dials addr on the ring network and sends a hello of this run
// at a generation far ahead, then a MAC of garbage.
func (c *Cluster) forgeRing(addr string) {
	ctx, cancel := context.WithTimeout(c.ctx, time.Second)
	defer cancel()
	conn, err := c.Ring.Dial(ctx, "127.0.9.9:0", addr)
	if err != nil {
		return
	}
	defer conn.Close()
	body := []byte{helloVersion, 0}
	body = binary.LittleEndian.AppendUint64(body, math.MaxUint64/2)
	body = binary.LittleEndian.AppendUint32(body, 0)
	body = binary.LittleEndian.AppendUint32(body, 1)
	body = binary.LittleEndian.AppendUint32(body, 2)
	for _, s := range []string{Run, "forger", "victim", ""} {
		body = binary.LittleEndian.AppendUint16(body, uint16(len(s)))
		body = append(body, s...)
	}
	msg := binary.LittleEndian.AppendUint32(nil, helloMagic)
	msg = binary.LittleEndian.AppendUint32(msg, uint32(len(body)))
	msg = append(msg, body...)
	msg = binary.LittleEndian.AppendUint32(msg, crc32.Checksum(body, castagnoli))
	msg = append(msg, make([]byte, 64)...)
	_ = conn.SetDeadline(time.Now().Add(500 * time.Millisecond))
	_, _ = conn.Write(msg)
	buf := make([]byte, 256)
	_, _ = conn.Read(buf) // the challenge or the refusal, whichever comes
}

// forgeGRPC sends the coordinator a progress report for trainer id at a
// generation near 2^64, without the run's credentials.
func (c *Cluster) forgeGRPC(id string) {
	conn, err := grpc.NewClient(c.Coordinator().GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(c.ctx, time.Second)
	defer cancel()
	_, _ = api.NewControlClient(conn).Report(ctx, &api.Report{TrainerId: id, Generation: math.MaxUint64 - 1,
		Kind: api.Report_PROGRESS, HasState: true, Position: &api.Position{Phase: 1, Step: 1 << 40}})
}
