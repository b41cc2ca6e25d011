package tier

import (
	"log/slog"
	"sync"
	"time"
)

// warnInterval is how often one kind of warning is logged at most.
const warnInterval = 10 * time.Second

// rateLimitedLog logs each message at most once per interval, and says how
// many were left out when it logs it again: a disk that fills up fails every
// write behind it, and a log line per tensor would bury everything else.
type rateLimitedLog struct {
	log      *slog.Logger
	interval time.Duration
	now      func() time.Time

	mu   sync.Mutex // guards last
	last map[string]*warnState
}

type warnState struct {
	at         time.Time
	suppressed int
}

func newRateLimitedLog(l *slog.Logger, interval time.Duration) *rateLimitedLog {
	return &rateLimitedLog{log: l, interval: interval, now: time.Now, last: map[string]*warnState{}}
}

// Warn logs msg with args unless msg was logged less than the interval ago.
func (r *rateLimitedLog) Warn(msg string, args ...any) {
	r.mu.Lock()
	now := r.now()
	st := r.last[msg]
	if st != nil && now.Sub(st.at) < r.interval {
		st.suppressed++
		r.mu.Unlock()
		return
	}
	suppressed := 0
	if st != nil {
		suppressed = st.suppressed
	}
	r.last[msg] = &warnState{at: now}
	r.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed_since_last", suppressed)
	}
	r.log.Warn(msg, args...)
}
