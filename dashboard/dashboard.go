package dashboard

import (
	"cmp"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sbtrain/sbtrain/position"
)

// Bounds of the history a dashboard keeps.
const (
	// MaxLossPoints is the most loss points kept per phase; beyond it the
	// curve is thinned to half and later points are kept at twice the step
	// spacing.
	MaxLossPoints = 2000
	// MaxTimeline is the most plan entries the timeline keeps (newest).
	MaxTimeline = 500
	// MaxGoneMembers is the most departed trainers remembered (newest).
	MaxGoneMembers = 64
)

// Options describe the run a dashboard shows.
type Options struct {
	Run    string
	Method string // "dsb", "si" or "dsbm"; shown only
	// PhaseNames names every phase in order; its length is the phase count.
	PhaseNames    []string
	StepsPerPhase int64
	Logger        *slog.Logger
	// Now replaces time.Now (tests).
	Now func() time.Time
	// EventInterval is the shortest time between two server-sent events
	// to one client; 0 means 500 ms.
	EventInterval time.Duration
	// MaxEventClients bounds the open /events streams; 0 means 32.
	MaxEventClients int
	// Token, if set, is a bearer token every request but /healthz must
	// carry: "Authorization: Bearer <token>", or the cookie that opening
	// /?token=<token> once sets (a browser's EventSource sends no headers).
	Token string
	// Refused, if set, is told of every request refused for its token
	// (the coordinator rate-limits the log); nil logs each at Debug.
	Refused func(from, why string)
}

// Position is how far a run is (package position owns its rules).
type Position = position.Position

// PlanMember is one member of a plan, in ring order.
type PlanMember struct {
	ID       string `json:"id"`
	RingAddr string `json:"ring_addr,omitempty"`
	Shards   []int  `json:"shards,omitempty"`
}

// Plan is a plan the coordinator published.
type Plan struct {
	Generation uint64
	Kind       string // wait, pause, run, finish
	Members    []PlanMember
	// Start, Source and Checkpoint are set for run plans.
	Start      Position
	Source     string // init, checkpoint, peer
	Checkpoint string
	Reason     string
}

// Progress is one progress report of a trainer: where it is after the
// steps it covers and what they cost.
type Progress struct {
	Trainer       string
	Generation    uint64
	Pos           Position
	Loss          float64 // global loss of the last step
	SamplesPerSec float64
	// Steps since the trainer's previous report, their summed wall time,
	// the part of it in the all-reduce and the bytes the trainer sent.
	Steps            int64
	StepSeconds      float64
	AllReduceSeconds float64
	AllReduceBytes   int64
}

// Checkpoint is a committed checkpoint.
type Checkpoint struct {
	Name    string
	Pos     Position
	Bytes   int64
	Seconds float64 // blob write plus commit
}

// Dashboard holds what the page shows and serves it. Its methods are safe
// for concurrent use.
type Dashboard struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics

	mu       sync.Mutex
	version  uint64        // bumped by every change
	changed  chan struct{} // closed and replaced by every change
	started  time.Time
	updated  time.Time
	plan     *Plan // newest
	ring     *Plan // newest run plan
	state    string
	pos      Position // leading position
	timeline []TimelineEntry
	members  map[string]*memberState
	curves   []curve
	lastLoss *float64
	ckpt     *CheckpointStatus
	ckpts    int
	samples  []byte
	sampInfo *SamplesInfo

	cacheMu   sync.Mutex
	cacheVer  uint64
	cacheJSON []byte

	quit      chan struct{} // closed by Close: ends every /events stream
	closeOnce sync.Once
	clients   chan struct{} // one token per open /events stream
}

type memberState struct {
	id, ringAddr string
	live         bool
	joined, left time.Time
	reason       string
	// Latest progress.
	gen           uint64
	pos           Position
	loss          *float64
	samplesPerSec float64
	stepSeconds   float64 // mean of the latest report
	reduceFrac    float64
	steps         int64 // totals over the dashboard's life
	reduceBytes   int64
	lastReport    time.Time
}

// New returns a dashboard of the run opts describes.
func New(opts Options) *Dashboard {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.EventInterval <= 0 {
		opts.EventInterval = 500 * time.Millisecond
	}
	if opts.MaxEventClients <= 0 {
		opts.MaxEventClients = 32
	}
	now := opts.Now()
	d := &Dashboard{
		opts: opts, log: opts.Logger, metrics: newMetrics(),
		changed: make(chan struct{}), started: now, updated: now, state: "starting",
		members: map[string]*memberState{}, curves: make([]curve, len(opts.PhaseNames)),
		quit: make(chan struct{}), clients: make(chan struct{}, opts.MaxEventClients),
	}
	for i := range d.curves {
		d.curves[i].gap = 1
	}
	return d
}

// Close ends every open /events stream; later ones end at once. The
// dashboard still answers other requests.
func (d *Dashboard) Close() {
	d.closeOnce.Do(func() { close(d.quit) })
}

// touch records a change (d.mu held).
func (d *Dashboard) touch() {
	d.version++
	d.updated = d.opts.Now()
	close(d.changed)
	d.changed = make(chan struct{})
}

var planStates = map[string]string{"wait": "waiting", "pause": "pausing", "run": "running", "finish": "done"}

// PlanPublished records a new plan: the run's state, generation, ring and
// timeline follow it.
func (d *Dashboard) PlanPublished(p Plan) {
	p.Members = clonePlanMembers(p.Members)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.plan = &p
	if s, ok := planStates[p.Kind]; ok {
		d.state = s
	} else {
		d.state = p.Kind
	}
	switch p.Kind {
	case "run":
		d.ring = &p
		d.pos = p.Start
	case "finish":
		d.pos = Position{Phase: len(d.opts.PhaseNames)}
	}
	e := TimelineEntry{Time: d.opts.Now(), Generation: p.Generation, Kind: p.Kind, Reason: p.Reason,
		Members: make([]string, len(p.Members))}
	for i, m := range p.Members {
		e.Members[i] = m.ID
	}
	if p.Kind == "run" {
		start := p.Start
		e.Start, e.Source, e.Checkpoint = &start, p.Source, p.Checkpoint
	}
	if len(d.timeline) >= MaxTimeline {
		d.timeline = slices.Delete(d.timeline, 0, len(d.timeline)-MaxTimeline+1)
	}
	d.timeline = append(d.timeline, e)
	d.metrics.generation.Set(float64(p.Generation))
	d.metrics.phase.Set(float64(d.pos.Phase))
	d.touch()
}

// SetState records what the run is doing (waiting, pausing, running,
// done), which a plan does not always say: the last member leaving, say.
func (d *Dashboard) SetState(state string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state == state {
		return
	}
	d.state = state
	d.touch()
}

// MemberJoined records a trainer joining (or rejoining) the run.
func (d *Dashboard) MemberJoined(id, ringAddr string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := d.members[id]
	if m == nil {
		m = &memberState{id: id}
		d.members[id] = m
	}
	m.ringAddr, m.live, m.joined, m.left, m.reason = ringAddr, true, d.opts.Now(), time.Time{}, ""
	d.metrics.memberUp.WithLabelValues(id).Set(1)
	d.countMembers()
	d.touch()
}

// MemberLeft records a trainer leaving the run, and why.
func (d *Dashboard) MemberLeft(id, reason string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := d.members[id]
	if m == nil || !m.live {
		return
	}
	m.live, m.left, m.reason = false, d.opts.Now(), reason
	d.metrics.memberUp.WithLabelValues(id).Set(0)
	d.forgetGone()
	d.countMembers()
	d.touch()
}

// forgetGone drops the oldest departed members beyond MaxGoneMembers, and
// their series (d.mu held).
func (d *Dashboard) forgetGone() {
	var gone []*memberState
	for _, m := range d.members {
		if !m.live {
			gone = append(gone, m)
		}
	}
	if len(gone) <= MaxGoneMembers {
		return
	}
	slices.SortFunc(gone, func(a, b *memberState) int { return a.left.Compare(b.left) })
	for _, m := range gone[:len(gone)-MaxGoneMembers] {
		delete(d.members, m.id)
		d.metrics.forget(m.id)
	}
}

func (d *Dashboard) countMembers() {
	n := 0
	for _, m := range d.members {
		if m.live {
			n++
		}
	}
	d.metrics.members.Set(float64(n))
}

// Progress records a trainer's progress report.
func (d *Dashboard) Progress(p Progress) {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := d.members[p.Trainer]
	if m == nil {
		// A report can only follow a join; keep it anyway, as live.
		m = &memberState{id: p.Trainer, live: true, joined: d.opts.Now()}
		d.members[p.Trainer] = m
		d.metrics.memberUp.WithLabelValues(p.Trainer).Set(1)
		d.countMembers()
	}
	m.gen, m.pos, m.samplesPerSec, m.lastReport = p.Generation, p.Pos, p.SamplesPerSec, d.opts.Now()
	m.loss = finite(p.Loss)
	m.steps += p.Steps
	m.reduceBytes += p.AllReduceBytes
	if p.Steps > 0 {
		m.stepSeconds = p.StepSeconds / float64(p.Steps)
	}
	if p.StepSeconds > 0 {
		m.reduceFrac = p.AllReduceSeconds / p.StepSeconds
	}
	if d.pos.Less(p.Pos) {
		d.pos = p.Pos
	}
	// The loss is that of the last step the report covers: a report at the
	// start of phase p+1 carries the final loss of phase p.
	phase, step := p.Pos.Phase, p.Pos.Step
	if step == 0 && phase > 0 {
		phase, step = phase-1, d.opts.StepsPerPhase
	}
	if m.loss != nil && step > 0 && phase < len(d.curves) {
		d.curves[phase].add(step, p.Loss)
		d.lastLoss = m.loss
		d.metrics.loss.WithLabelValues(phaseLabel(phase)).Set(p.Loss)
	}
	d.metrics.progress(p)
	d.metrics.phase.Set(float64(d.pos.Phase))
	d.touch()
}

// CheckpointCommitted records a committed checkpoint.
func (d *Dashboard) CheckpointCommitted(c Checkpoint) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ckpt = &CheckpointStatus{Name: c.Name, Position: c.Pos, Bytes: c.Bytes, Seconds: number(c.Seconds), Time: d.opts.Now()}
	d.ckpts++
	d.metrics.checkpoint(c)
	d.touch()
}

// SetSamples replaces the samples plot (a PNG); caption says what it shows.
func (d *Dashboard) SetSamples(png []byte, caption string) {
	png = slices.Clone(png)
	d.mu.Lock()
	defer d.mu.Unlock()
	v := 1
	if d.sampInfo != nil {
		v = d.sampInfo.Version + 1
	}
	d.samples = png
	d.sampInfo = &SamplesInfo{Version: v, Caption: caption, Time: d.opts.Now(), URL: fmt.Sprintf("/samples.png?v=%d", v)}
	d.touch()
}

// Status is the document /api/status serves and /events pushes. Its
// lists are never null, so the page need not check.
type Status struct {
	Run           string            `json:"run"`
	Method        string            `json:"method,omitempty"`
	State         string            `json:"state"` // starting, waiting, pausing, running, done
	Generation    uint64            `json:"generation"`
	Position      Position          `json:"position"` // the leading member's
	StepsPerPhase int64             `json:"steps_per_phase"`
	Phases        []PhaseStatus     `json:"phases"`
	Timeline      []TimelineEntry   `json:"timeline"`
	Ring          []string          `json:"ring"` // members of the newest run plan, in ring order
	Members       []MemberStatus    `json:"members"`
	Live          int               `json:"live"`
	SamplesPerSec number            `json:"samples_per_sec"`
	Loss          *number           `json:"loss"`
	Checkpoint    *CheckpointStatus `json:"last_checkpoint"`
	Checkpoints   int               `json:"checkpoints"`
	LossCurves    []LossCurve       `json:"loss_curves"`
	Samples       *SamplesInfo      `json:"samples"`
	Started       time.Time         `json:"started"`
	Updated       time.Time         `json:"updated"`
	Version       uint64            `json:"version"`
}

// PhaseStatus is one phase of the run.
type PhaseStatus struct {
	Index int    `json:"index"`
	Name  string `json:"name"`
	Steps int64  `json:"steps"`
	State string `json:"state"` // done, running, pending
}

// TimelineEntry is one published plan.
type TimelineEntry struct {
	Time       time.Time `json:"time"`
	Generation uint64    `json:"generation"`
	Kind       string    `json:"kind"`
	Members    []string  `json:"members"`
	Start      *Position `json:"start,omitempty"`
	Source     string    `json:"source,omitempty"`
	Checkpoint string    `json:"checkpoint,omitempty"`
	Reason     string    `json:"reason,omitempty"`
}

// MemberStatus is one trainer, live or gone.
type MemberStatus struct {
	ID            string    `json:"id"`
	State         string    `json:"state"` // live, gone
	Rank          int       `json:"rank"`  // in the newest run plan; -1 when not in it
	RingAddr      string    `json:"ring_addr"`
	Shards        []int     `json:"shards"`
	Generation    uint64    `json:"generation"` // of its latest report
	Position      Position  `json:"position"`
	Loss          *number   `json:"loss"`
	SamplesPerSec number    `json:"samples_per_sec"`
	StepSeconds   number    `json:"step_seconds"`       // mean, latest report
	AllReduceFrac number    `json:"allreduce_fraction"` // latest report
	Steps         int64     `json:"steps_total"`
	AllReduceMB   number    `json:"allreduce_mb_total"`
	Joined        time.Time `json:"joined"`
	Left          time.Time `json:"left,omitzero"`
	Reason        string    `json:"reason,omitempty"` // why it left
	LastReport    time.Time `json:"last_report,omitzero"`
}

// CheckpointStatus is the newest committed checkpoint.
type CheckpointStatus struct {
	Name     string    `json:"name"`
	Position Position  `json:"position"`
	Bytes    int64     `json:"bytes"`
	Seconds  number    `json:"seconds"`
	Time     time.Time `json:"time"`
}

// LossCurve is the loss of one phase at the steps kept.
type LossCurve struct {
	Phase int       `json:"phase"`
	Name  string    `json:"name"`
	Steps []int64   `json:"steps"`
	Loss  []number6 `json:"loss"`
}

// SamplesInfo describes the samples plot, if there is one.
type SamplesInfo struct {
	Version int       `json:"version"`
	Caption string    `json:"caption"`
	Time    time.Time `json:"time"`
	URL     string    `json:"url"`
}

// Status returns the run as the page sees it.
func (d *Dashboard) Status() *Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.status()
}

func (d *Dashboard) status() *Status {
	s := &Status{Run: d.opts.Run, Method: d.opts.Method, State: d.state, Position: d.pos,
		StepsPerPhase: d.opts.StepsPerPhase, Timeline: append([]TimelineEntry{}, d.timeline...), Ring: []string{},
		Phases: []PhaseStatus{}, Members: []MemberStatus{}, LossCurves: []LossCurve{},
		Checkpoints: d.ckpts, Started: d.started, Updated: d.updated, Version: d.version}
	if d.plan != nil {
		s.Generation = d.plan.Generation
	}
	for i, name := range d.opts.PhaseNames {
		st := "pending"
		switch {
		case i < d.pos.Phase:
			st = "done"
		case i == d.pos.Phase && d.state != "starting":
			st = "running"
		}
		s.Phases = append(s.Phases, PhaseStatus{Index: i, Name: name, Steps: d.opts.StepsPerPhase, State: st})
	}
	rank := map[string]int{}
	shards := map[string][]int{}
	if d.ring != nil {
		for r, m := range d.ring.Members {
			s.Ring = append(s.Ring, m.ID)
			rank[m.ID], shards[m.ID] = r, m.Shards
		}
	}
	var rate float64
	var rates int
	for _, m := range d.members {
		ms := MemberStatus{ID: m.id, State: "gone", Rank: -1, RingAddr: m.ringAddr, Shards: []int{}, Generation: m.gen,
			Position: m.pos, Loss: (*number)(m.loss), SamplesPerSec: number(m.samplesPerSec), StepSeconds: number(m.stepSeconds),
			AllReduceFrac: number(m.reduceFrac), Steps: m.steps, AllReduceMB: number(float64(m.reduceBytes) / 1e6),
			Joined: m.joined, Left: m.left, Reason: m.reason, LastReport: m.lastReport}
		if m.live {
			ms.State = "live"
			s.Live++
			if r, ok := rank[m.id]; ok {
				ms.Rank, ms.Shards = r, append([]int{}, shards[m.id]...)
			}
			if d.ring != nil && m.gen == d.ring.Generation && m.samplesPerSec > 0 {
				rate += m.samplesPerSec
				rates++
			}
		}
		s.Members = append(s.Members, ms)
	}
	// Live members first, in ring order; then the rest by ID.
	order := func(m MemberStatus) (int, int) {
		live, rank := 1, m.Rank
		if m.State == "live" {
			live = 0
		}
		if rank < 0 {
			rank = math.MaxInt
		}
		return live, rank
	}
	slices.SortFunc(s.Members, func(a, b MemberStatus) int {
		la, ra := order(a)
		lb, rb := order(b)
		return cmp.Or(cmp.Compare(la, lb), cmp.Compare(ra, rb), strings.Compare(a.ID, b.ID))
	})
	if rates > 0 {
		// Every member counts the global batch of each step it takes, so
		// their rates agree; the mean smooths report timing.
		s.SamplesPerSec = number(rate / float64(rates))
	}
	s.Loss = (*number)(d.lastLoss)
	if d.ckpt != nil {
		c := *d.ckpt
		s.Checkpoint = &c
	}
	for i, c := range d.curves {
		lc := LossCurve{Phase: i, Name: d.opts.PhaseNames[i], Steps: append([]int64{}, c.steps...), Loss: make([]number6, len(c.loss))}
		for j, v := range c.loss {
			lc.Loss[j] = number6(v)
		}
		s.LossCurves = append(s.LossCurves, lc)
	}
	if d.sampInfo != nil {
		si := *d.sampInfo
		s.Samples = &si
	}
	return s
}

// snapshot returns the status document as JSON, the version it shows and
// a channel closed at the next change. Every version is encoded once,
// however many clients read it.
func (d *Dashboard) snapshot() ([]byte, uint64, <-chan struct{}) {
	d.mu.Lock()
	ver, changed := d.version, d.changed
	d.cacheMu.Lock()
	if d.cacheVer == ver && d.cacheJSON != nil {
		b := d.cacheJSON
		d.cacheMu.Unlock()
		d.mu.Unlock()
		return b, ver, changed
	}
	d.cacheMu.Unlock()
	s := d.status()
	d.mu.Unlock()
	// Encoding happens outside d.mu, so the coordinator's loop is not held
	// up by a large document.
	b, err := json.Marshal(s)
	if err != nil {
		// Every number is finite by construction; this is a bug.
		d.log.Error("dashboard: encode status", "err", err)
		b = []byte(`{}`)
	}
	d.cacheMu.Lock()
	if ver >= d.cacheVer {
		d.cacheVer, d.cacheJSON = ver, b
	}
	d.cacheMu.Unlock()
	return b, ver, changed
}

// curve is the loss of one phase, thinned to at most MaxLossPoints points.
type curve struct {
	steps []int64
	loss  []float64
	// gap is the least step distance between kept points; it doubles at
	// every thinning so the density stays even along the phase.
	gap int64
}

func (c *curve) add(step int64, v float64) {
	n := len(c.steps)
	switch {
	case n > 0 && step <= c.steps[n-1]:
		// A replay after a re-plan from an earlier checkpoint, or a
		// member behind the others: training is exact, so the kept
		// points already show these steps.
		return
	case n >= 2 && step-c.steps[n-2] < c.gap:
		// Too close to the previous kept point: move the last point on,
		// so the curve always ends at the newest step.
		c.steps[n-1], c.loss[n-1] = step, v
		return
	}
	c.steps = append(c.steps, step)
	c.loss = append(c.loss, v)
	if len(c.steps) <= MaxLossPoints {
		return
	}
	last := len(c.steps) - 1
	k := 0
	for i := 0; i < last; i += 2 {
		c.steps[k], c.loss[k] = c.steps[i], c.loss[i]
		k++
	}
	c.steps[k], c.loss[k] = c.steps[last], c.loss[last]
	c.steps, c.loss = c.steps[:k+1], c.loss[:k+1]
	c.gap *= 2
}

func clonePlanMembers(ms []PlanMember) []PlanMember {
	out := make([]PlanMember, len(ms))
	for i, m := range ms {
		m.Shards = slices.Clone(m.Shards)
		out[i] = m
	}
	return out
}

// finite returns &v, or nil when v is NaN or infinite (JSON has no
// spelling for those).
func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// number is a float64 that encodes NaN and infinities as null.
type number float64

func (n number) MarshalJSON() ([]byte, error) {
	v := float64(n)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return []byte("null"), nil
	}
	return strconv.AppendFloat(nil, v, 'g', -1, 64), nil
}

// number6 is a number written with 6 significant digits: loss curves are
// the bulk of the status document.
type number6 float64

func (n number6) MarshalJSON() ([]byte, error) {
	v := float64(n)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return []byte("null"), nil
	}
	return strconv.AppendFloat(nil, v, 'g', 6, 64), nil
}
