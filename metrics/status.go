package metrics

import (
	"fmt"
	"time"
)

// The statuses of a pipeline on /readyz, from the worst.
const (
	StatusUnavailable = "unavailable" // not open yet, or no pass loaded its cursor yet
	StatusDegraded    = "degraded"    // a pass ended with records the API cannot serve
	StatusFailing     = "failing"     // the last pass attempt failed; the next may heal it
	StatusOK          = "ok"
)

// Status is what /readyz says about one pipeline.
type Status struct {
	Pipeline string `json:"pipeline"`
	Status   string `json:"status"`
	// Reason says why a pipeline is unavailable or degraded.
	Reason string `json:"reason,omitempty"`
	// Error is the last pass attempt's error while passes keep failing, Since when the first
	// of them failed and Failures how many failed in a row. A degraded pipeline may be
	// failing too.
	Error    string     `json:"error,omitempty"`
	Since    *time.Time `json:"since,omitempty"`
	Failures int        `json:"consecutive_failures,omitempty"`
	// PassStarted is when the pass running now loaded its cursor (unset between passes),
	// LastPage when the API last answered a page, LastSuccess when a pass last succeeded: a
	// pass running long with an old LastPage is stalled on its API before it fails (after
	// --api-timeout and its retries).
	PassStarted *time.Time `json:"pass_started,omitempty"`
	LastPage    *time.Time `json:"last_page,omitempty"`
	LastSuccess *time.Time `json:"last_success,omitempty"`
}

// Status is the pipeline's status now.
func (m *Metrics) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := Status{Pipeline: m.name, Status: StatusOK, PassStarted: utc(m.passStarted), LastPage: utc(m.lastPage), LastSuccess: utc(m.lastSuccess)}
	if m.failures > 0 {
		st.Status, st.Error, st.Since, st.Failures = StatusFailing, m.lastErr, utc(m.failingSince), m.failures
	}
	switch {
	case !m.opened:
		st.Status, st.Reason = StatusUnavailable, "connecting to Kafka: the topics are not checked yet"
	case !m.loaded:
		st.Status, st.Reason = StatusUnavailable, "the cursor is not loaded yet"
	case m.degradedBy != "":
		// Records the API cannot serve are missing for good: keep the pipeline out of "ready"
		// until an operator re-reads them (cursor set --to) and restarts it, or accepts the
		// loss (--accept-tie-overflow).
		st.Status, st.Reason = StatusDegraded, m.degradedBy
	}
	return st
}

// utc is t in UTC, or nil when it is zero.
func utc(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// Readiness is the body of /readyz: the process's status and every pipeline's.
type Readiness struct {
	// Status is unavailable while a pipeline is (not loaded once yet), else degraded while
	// one is, else ok: failing pipelines do not make the process unready, since their next
	// pass may heal them; they are counted and listed.
	Status string `json:"status"`
	// Reason says why the process is not ready: the pipeline's reason when there is one, else
	// how many are not and the first of them.
	Reason    string         `json:"reason,omitempty"`
	Counts    map[string]int `json:"counts"`
	Pipelines []Status       `json:"pipelines"`
}

// Ready reports whether the process is ready (Readiness.Status ok) and the statuses.
func (p *Process) Ready() (bool, Readiness) {
	p.mu.Lock()
	ms := append([]*Metrics(nil), p.pipelines...)
	p.mu.Unlock()
	r := Readiness{Status: StatusOK, Counts: map[string]int{}, Pipelines: make([]Status, 0, len(ms))}
	for _, m := range ms {
		st := m.Status()
		r.Counts[st.Status]++
		r.Pipelines = append(r.Pipelines, st)
	}
	if len(ms) == 0 {
		r.Status, r.Reason = StatusUnavailable, "no pipeline yet"
		return false, r
	}
	for _, worst := range []string{StatusUnavailable, StatusDegraded} {
		n := r.Counts[worst]
		if n == 0 {
			continue
		}
		r.Status = worst
		for _, st := range r.Pipelines {
			if st.Status != worst {
				continue
			}
			if len(ms) == 1 {
				r.Reason = st.Reason
			} else {
				r.Reason = fmt.Sprintf("%d of %d pipelines %s, the first: pipeline %q: %s", n, len(ms), worst, st.Pipeline, st.Reason)
			}
			break
		}
		return false, r
	}
	return true, r
}
