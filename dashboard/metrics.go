package dashboard

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// maxObservedSteps bounds the histogram observations one progress report
// makes (one per step it covers), so a bogus step count cannot stall the
// caller.
const maxObservedSteps = 1 << 16

// metrics are the Prometheus families of one dashboard, in a registry of
// its own; the package doc lists them.
type metrics struct {
	reg *prometheus.Registry

	stepDuration  *prometheus.HistogramVec
	samplesPerSec *prometheus.GaugeVec
	loss          *prometheus.GaugeVec
	steps         *prometheus.CounterVec
	reduceSeconds *prometheus.CounterVec
	reduceBytes   *prometheus.CounterVec
	memberUp      *prometheus.GaugeVec

	ckptDuration prometheus.Histogram
	ckptBytes    prometheus.Counter
	ckpts        prometheus.Counter
	members      prometheus.Gauge
	generation   prometheus.Gauge
	phase        prometheus.Gauge
}

func newMetrics() *metrics {
	trainer := []string{"trainer"}
	m := &metrics{
		reg: prometheus.NewRegistry(),
		stepDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sbtrain_step_duration_seconds",
			Help: "Wall time of one optimiser step (gradient, all-reduce, update); each step of a progress report is observed at that report's mean.",
			// 0.5 ms to about 16 s.
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, trainer),
		samplesPerSec: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sbtrain_samples_per_second",
			Help: "Training samples per second in the trainer's latest progress report (every member counts the global batch of each step).",
		}, trainer),
		loss: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sbtrain_loss",
			Help: "Latest global training loss of each phase.",
		}, []string{"phase"}),
		steps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sbtrain_steps_total",
			Help: "Optimiser steps the trainer applied.",
		}, trainer),
		reduceSeconds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sbtrain_allreduce_duration_seconds_total",
			Help: "Seconds the trainer spent in gradient all-reduces.",
		}, trainer),
		reduceBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sbtrain_allreduce_bytes_total",
			Help: "Payload bytes the trainer sent to its ring neighbour in gradient all-reduces.",
		}, trainer),
		memberUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sbtrain_member_up",
			Help: "1 while the trainer is a member of the run, 0 once it has left.",
		}, trainer),
		ckptDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sbtrain_checkpoint_duration_seconds",
			Help: "Cost of one committed checkpoint: encoding and writing its blobs, then the commit.",
			// 10 ms to about 160 s.
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 15),
		}),
		ckptBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sbtrain_checkpoint_bytes_total",
			Help: "Blob bytes of committed checkpoints.",
		}),
		ckpts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sbtrain_checkpoints_total",
			Help: "Committed checkpoints.",
		}),
		members: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sbtrain_members",
			Help: "Trainers currently in the run.",
		}),
		generation: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sbtrain_generation",
			Help: "Generation of the newest plan.",
		}),
		phase: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sbtrain_phase",
			Help: "Index of the phase in progress; the phase count once the run is done.",
		}),
	}
	m.reg.MustRegister(m.stepDuration, m.samplesPerSec, m.loss, m.steps, m.reduceSeconds, m.reduceBytes, m.memberUp,
		m.ckptDuration, m.ckptBytes, m.ckpts, m.members, m.generation, m.phase,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// progress adds one progress report.
func (m *metrics) progress(p Progress) {
	id := p.Trainer
	m.samplesPerSec.WithLabelValues(id).Set(p.SamplesPerSec)
	steps := m.steps.WithLabelValues(id)
	reduceSec := m.reduceSeconds.WithLabelValues(id)
	reduceBytes := m.reduceBytes.WithLabelValues(id)
	if p.Steps > 0 {
		steps.Add(float64(p.Steps))
		h := m.stepDuration.WithLabelValues(id)
		mean := p.StepSeconds / float64(p.Steps)
		for range min(p.Steps, maxObservedSteps) {
			h.Observe(mean)
		}
	}
	if p.AllReduceSeconds > 0 {
		reduceSec.Add(p.AllReduceSeconds)
	}
	if p.AllReduceBytes > 0 {
		reduceBytes.Add(float64(p.AllReduceBytes))
	}
}

// checkpoint adds one committed checkpoint.
func (m *metrics) checkpoint(c Checkpoint) {
	m.ckpts.Inc()
	if c.Bytes > 0 {
		m.ckptBytes.Add(float64(c.Bytes))
	}
	if c.Seconds >= 0 {
		m.ckptDuration.Observe(c.Seconds)
	}
}

// forget deletes a departed trainer's series.
func (m *metrics) forget(id string) {
	for _, v := range []interface{ DeleteLabelValues(...string) bool }{
		m.samplesPerSec, m.steps, m.reduceSeconds, m.reduceBytes, m.memberUp,
	} {
		v.DeleteLabelValues(id)
	}
	m.stepDuration.DeleteLabelValues(id)
}

// phaseLabel is the phase label value of phase p.
func phaseLabel(p int) string { return strconv.Itoa(p) }
