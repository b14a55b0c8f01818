package gateway

import (
	"math"
	"time"
)

// Window is how many recent probes the statistics cover.
const Window = 10

// ProbeResult is one probe: its RTT when answered, Lost when it timed out.
type ProbeResult struct {
	Sent time.Time
	RTT  time.Duration
	Lost bool
}

// ProbeStats summarise a window of probe results.
type ProbeStats struct {
	// Sent is the number of completed probes in the window (answered or lost).
	Sent int
	// Lost counts unanswered ones; LossPercent is their share.
	Lost        int
	LossPercent int32
	// Last, Min, Avg, Max, StdDev are over answered probes; zero without any.
	Last, Min, Avg, Max, StdDev time.Duration
	// ConsecutiveLost counts the lost probes since the last reply.
	ConsecutiveLost int
	// LastReply is when the most recent answered probe was sent; zero if none.
	LastReply time.Time
	// Silence is how long the target has not answered: since the most recent answered
	// probe was sent, or since probing it began when it never answered.
	Silence time.Duration
	// DeadAfter is the silence after which the target counts as down (with at least
	// LostProbesForError probes lost in a row); zero means the count alone decides.
	DeadAfter time.Duration
	// RestartingUntil is set while the target's restart announcement holds: until
	// then, or its next reply, its silence is its restart and not an outage.
	RestartingUntil time.Time
	// OwnRestart says the hold is for this gateway's own restart, during which it
	// could hear no announcement, rather than one the target announced.
	OwnRestart bool
}

// Restarting says the target announced a restart whose hold has not run out and has
// not answered since.
func (s ProbeStats) Restarting() bool { return !s.RestartingUntil.IsZero() }

// Down says the target stopped answering: LostProbesForError probes in a row went
// unanswered and it has been silent for DeadAfter, and it is not in the hold of a
// restart it announced.
func (s ProbeStats) Down() bool {
	return !s.Restarting() && s.ConsecutiveLost >= LostProbesForError && s.Silence >= s.DeadAfter
}

// Summarise computes ProbeStats of results in sending order.
func Summarise(results []ProbeResult) ProbeStats {
	var s ProbeStats
	var sum, sumSq float64
	n := 0
	for _, r := range results {
		s.Sent++
		if r.Lost {
			s.Lost++
			s.ConsecutiveLost++
			continue
		}
		s.ConsecutiveLost = 0
		s.LastReply = r.Sent
		s.Last = r.RTT
		if n == 0 || r.RTT < s.Min {
			s.Min = r.RTT
		}
		s.Max = max(s.Max, r.RTT)
		n++
		sum += float64(r.RTT)
		sumSq += float64(r.RTT) * float64(r.RTT)
	}
	if s.Sent > 0 {
		s.LossPercent = int32(100 * s.Lost / s.Sent)
	}
	if n > 0 {
		mean := sum / float64(n)
		s.Avg = time.Duration(mean)
		s.StdDev = time.Duration(math.Sqrt(max(0, sumSq/float64(n)-mean*mean)))
	}
	return s
}
