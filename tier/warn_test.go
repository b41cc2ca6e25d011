package tier

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A warning repeated within the interval is logged once; the next one after
// it says how many were left out. Different messages do not hold each
// other back.
func TestRateLimitedLog_OncePerInterval(t *testing.T) {
	var buf bytes.Buffer
	r := newRateLimitedLog(slog.New(slog.NewTextHandler(&buf, nil)), 10*time.Second)
	now := time.Unix(1000, 0)
	r.now = func() time.Time { return now }
	for range 5 {
		r.Warn("disk full", "n", 1)
	}
	r.Warn("other")
	now = now.Add(11 * time.Second)
	r.Warn("disk full", "n", 2)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 3, "%s", buf.String())
	require.Contains(t, lines[0], "disk full")
	require.NotContains(t, lines[0], "suppressed")
	require.Contains(t, lines[1], "other")
	require.Contains(t, lines[2], "suppressed_since_last=4")
}
