package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/sbtrain/sbtrain/coordinator"
	"github.com/sbtrain/sbtrain/dashboard"
	"github.com/sbtrain/sbtrain/internal/runauth"
)

// dashboardObserver shows the coordinator's facts on the dashboard.
type dashboardObserver struct{ d *dashboard.Dashboard }

func (o dashboardObserver) NotifyState(s coordinator.RunState) { o.d.SetState(s.String()) }

func (o dashboardObserver) NotifyJoin(j coordinator.MemberJoined) { o.d.MemberJoined(j.ID, j.RingAddr) }

func (o dashboardObserver) NotifyLeave(l coordinator.MemberLeft) { o.d.MemberLeft(l.ID, l.Reason) }

func (o dashboardObserver) NotifyPlan(p coordinator.Plan) {
	out := dashboard.Plan{Generation: p.Generation, Kind: p.Kind.String(), Reason: p.Reason, Checkpoint: p.Checkpoint,
		Start: p.Start, Members: make([]dashboard.PlanMember, len(p.Members))}
	if p.Kind == coordinator.KindRun {
		out.Source = p.Source.String()
	}
	for i, m := range p.Members {
		out.Members[i] = dashboard.PlanMember{ID: m.ID, RingAddr: m.RingAddr, Shards: m.Shards}
	}
	o.d.PlanPublished(out)
}

func (o dashboardObserver) NotifyProgress(p coordinator.ProgressAccepted) {
	o.d.Progress(dashboard.Progress{Trainer: p.ID, Generation: p.Generation, Pos: p.Pos, Loss: p.Loss,
		SamplesPerSec: p.SamplesPerSec, Steps: p.Steps, StepSeconds: p.StepSeconds,
		AllReduceSeconds: p.AllReduceSeconds, AllReduceBytes: p.AllReduceBytes})
}

func (o dashboardObserver) NotifyCommit(c coordinator.CommitRecorded) {
	o.d.CheckpointCommitted(dashboard.Checkpoint{Name: c.Checkpoint, Pos: c.Pos, Bytes: c.Bytes, Seconds: c.Seconds})
}

// coordinatorRun is the run's coordinator and the dashboard the command
// serves beside it (web is nil without --http).
type coordinatorRun struct {
	*coordinator.Coordinator
	web *dashboard.Server
}

// DashboardURL is the dashboard's address, http://host:port/, or "".
func (r *coordinatorRun) DashboardURL() string {
	if r.web == nil {
		return ""
	}
	return r.web.URL()
}

// Close stops the coordinator, then the dashboard.
func (r *coordinatorRun) Close() error {
	err := r.Coordinator.Close()
	if r.web != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if werr := r.web.Shutdown(ctx); werr != nil {
			slog.Warn("dashboard shutdown", "err", werr)
		}
	}
	return err
}

// listenDashboard opens the dashboard's listener on addr, which must obey
// the run's loopback rule.
func listenDashboard(secret *runauth.Secret, addr string) (net.Listener, error) {
	if err := runauth.CheckBind(secret, "dashboard address", addr); err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for the dashboard on %s: %w", addr, err)
	}
	return lis, nil
}
