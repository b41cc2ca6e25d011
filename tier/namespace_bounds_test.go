package tier

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
)

// keptNamespaces is how many namespace states c keeps.
func keptNamespaces(c *Cache) int {
	n := 0
	c.namespaces.Range(func(any, any) bool { n++; return true })
	return n
}

// scrape is what a Prometheus scrape of a registry holding only a
// collector of c answers: status and body.
func scrape(t *testing.T, col prometheus.Collector) (int, []byte) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(col))
	w := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return w.Code, w.Body.Bytes()
}

// keptNamed is how many namespaces L2's counters keep measures of by name.
func keptNamed(t *testing.T, c *Cache) int {
	t.Helper()
	stored, err := c.rec.Counts()
	require.NoError(t, err)
	_, byNS := keptMeters(stored)
	n := 0
	for ns := range byNS {
		if ns != "" && ns != otherNamespaces {
			n++
		}
	}
	return n
}

// 20,000 lookups of absent values in 20,000 namespaces: they keep no
// state, Stats and a scrape stay a few KB, and their counts survive Close
// (which upstream failed to save: "Txn is too big", the lifetime counters
// of the whole process lost).
func TestNamespaces_LookupsKeepNothing(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	c, err := Open(&Options{Dir: dir, Logger: nilLogger()})
	require.NoError(t, err)
	_, empty := scrape(t, NewCollector(c)) // every metric but those by namespace
	const n = 20000
	for i := range n {
		ns := fmt.Sprintf("made-up-%d", i)
		switch i % 4 {
		case 0, 1:
			_, err = c.Get(ctx, ns, "k", nil)
		case 2:
			_, err = c.OpenValue(ctx, ns, "k")
		case 3:
			_, err = c.GetWith(ctx, ns, "k", &PutOptions{DType: "F32"}, nil)
		}
		require.ErrorIs(t, err, errs.ErrNotFound)
	}
	require.NoError(t, c.Delete(ctx, "made-up-x", "k"))
	require.NoError(t, c.Values("made-up-y", func(*CachedValue) bool { return true }))
	require.Zero(t, keptNamespaces(c), "a lookup keeps no namespace state")
	require.Empty(t, c.nsm.own)

	s := c.Stats()
	require.Empty(t, s.Namespaces)
	require.NotNil(t, s.OtherNamespaces)
	require.Equal(t, uint64(n), s.OtherNamespaces.Absent)
	require.Equal(t, uint64(n), s.Values.Absent)
	js, err := json.Marshal(s)
	require.NoError(t, err)
	require.Less(t, len(js), 32<<10, "Stats JSON")
	code, body := scrape(t, NewCollector(c))
	require.Equal(t, http.StatusOK, code)
	require.Less(t, len(body), len(empty)+2<<10, "a scrape: one namespace more")
	require.True(t, strings.Contains(string(body), `modelcache_namespace_hit_ratio{namespace="_other"} 0`))
	require.NoError(t, c.Close())

	c = openCache(t, &Options{Dir: dir, Logger: nilLogger()})
	life := c.Stats().LifetimeMeasured
	require.Equal(t, uint64(n), life.Values.Absent, "the lifetime counters were saved")
	require.NotNil(t, life.OtherNamespaces)
	require.Equal(t, uint64(n), life.OtherNamespaces.Absent)
	require.Zero(t, keptNamed(t, c))
}

// Namespaces that hold values are measured by name up to
// MaxNamespaceMeters, the busiest; the rest together. What L2 keeps stays
// bounded across processes, and adds up to every request.
func TestNamespaces_MetersBoundedBusiestKept(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	const limit = 8
	opts := &Options{Dir: dir, Logger: nilLogger(), MaxNamespaceMeters: limit}
	fill := func(context.Context) ([]byte, error) { return []byte("v"), nil }
	var total uint64
	run := func(prefix string, spaces int, busy string) {
		c, err := Open(opts)
		require.NoError(t, err)
		for i := range spaces {
			ns := fmt.Sprintf("%s-%d", prefix, i)
			require.NoError(t, c.Put(ctx, ns, "k", []byte("v"), nil))
			_, err := c.Get(ctx, ns, "k", nil)
			require.NoError(t, err)
			_, err = c.Get(ctx, ns, "absent", nil)
			require.ErrorIs(t, err, errs.ErrNotFound)
			total += 2
		}
		// A namespace that came too late for a meter of its own gets one
		// once it is busier than the least busy that has one.
		for range 4 * promoteEvery {
			_, err := c.Get(ctx, busy, "k", fill)
			require.NoError(t, err)
			total++
		}
		require.Equal(t, spaces, keptNamespaces(c), "namespaces that hold values are kept")
		require.LessOrEqual(t, len(c.nsm.own), limit)
		s := c.Stats()
		require.Len(t, s.Namespaces, limit)
		require.Contains(t, s.Namespaces, busy)
		require.NotNil(t, s.OtherNamespaces)
		sum := s.OtherNamespaces.Requests
		for _, m := range s.Namespaces {
			sum += m.Requests
		}
		require.Equal(t, s.Values.Requests, sum, "the namespaces add up to every value request")
		require.NoError(t, c.Close())
	}
	run("first", 100, "first-90")
	run("second", 100, "second-95")

	c := openCache(t, opts)
	require.LessOrEqual(t, keptNamed(t, c), limit, "L2 keeps at most MaxNamespaceMeters by name")
	life := c.Stats().LifetimeMeasured
	require.Equal(t, total, life.Values.Requests, "Close/reopen lost nothing, the other namespaces included")
	require.LessOrEqual(t, len(life.Namespaces), limit)
	require.Contains(t, life.Namespaces, "second-95", "the busiest of the last process")
	sum := life.OtherNamespaces.Requests
	for _, m := range life.Namespaces {
		sum += m.Requests
	}
	require.Equal(t, total, sum)
}

// Every entry point of the values API refuses a namespace that is not
// text, with ErrInvalidArgument, before it keeps or stores anything.
func TestNamespaces_InvalidRejected(t *testing.T) {
	c := openCache(t, &Options{Dir: t.TempDir(), Logger: nilLogger()})
	ctx := context.Background()
	fill := func(context.Context) ([]byte, error) { return []byte("v"), nil }
	for _, ns := range []string{"\xff", "bad\xc3", "new\nline", "nul\x00", "tab\t", "del\x7f", strings.Repeat("n", 257)} {
		calls := map[string]error{}
		_, calls["Get"] = c.Get(ctx, ns, "k", nil)
		_, calls["Get with fill"] = c.Get(ctx, ns, "k", fill)
		_, calls["GetWith"] = c.GetWith(ctx, ns, "k", &PutOptions{DType: "U8"}, fill)
		_, calls["OpenValue"] = c.OpenValue(ctx, ns, "k")
		calls["Put"] = c.Put(ctx, ns, "k", []byte("v"), nil)
		calls["PutReader"] = c.PutReader(ctx, ns, "k", bytes.NewReader([]byte("v")), 1, nil)
		calls["Delete"] = c.Delete(ctx, ns, "k")
		calls["DropNamespace"] = c.DropNamespace(ctx, ns)
		calls["SetNamespace"] = c.SetNamespace(ns, NamespaceOptions{TTL: 1})
		calls["Values"] = c.Values(ns, func(*CachedValue) bool { return true })
		for call, err := range calls {
			require.ErrorIs(t, err, errs.ErrInvalidArgument, "%s(%q)", call, ns)
		}
	}
	require.Zero(t, keptNamespaces(c))
	code, _ := scrape(t, NewCollector(c))
	require.Equal(t, http.StatusOK, code)
}

// A name that is not valid UTF-8 can still reach the measures: an older
// build kept it in L2's counters, or a program's namespace state holds it.
// A scrape of tier.NewCollector answers 200 all the same, and names that
// come to one label share one series.
func TestCollector_InvalidNamesStillScrape(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(&Options{Dir: dir, Logger: nilLogger()})
	require.NoError(t, err)
	// Counters as an older build kept them.
	require.NoError(t, c.rec.Add(map[string]uint64{
		recordOf("\xff") + "a": 5, recordOf("\xff") + "s1": 2, recordOf("ok") + "s1": 1,
	}))
	// A state however it came to be: counted, beside "_other" and a
	// second name that is spelled the same once made valid.
	for _, ns := range []string{"\xff", "\xfe\xfd", "_other"} {
		st := newNSState(ns, 0, false)
		st.meter.Store(&c.nsm.other)
		c.namespaces.Store(ns, st)
		c.nsm.assign(st)
		st.meter.Load().absent.Add(1)
	}
	_, err = c.Get(context.Background(), "never-stored", "k", nil)
	require.ErrorIs(t, err, errs.ErrNotFound)

	col := NewCollector(c)
	code, body := scrape(t, col)
	require.Equal(t, http.StatusOK, code, "%.300s", body)
	problems, err := testutil.CollectAndLint(col)
	require.NoError(t, err)
	require.Empty(t, problems)
	for _, series := range []string{"modelcache_namespace_hit_ratio{namespace=\"\ufffd\"} 0\n", `modelcache_namespace_hit_ratio{namespace="_other"} 0` + "\n"} {
		require.Equal(t, 1, strings.Count(string(body), series), "%s", series)
	}

	// The lifetime measures never name what no entry point accepts: the
	// older build's namespace counts with the others, and the next Close
	// moves it there in L2.
	life := c.Stats().LifetimeMeasured
	require.NotContains(t, life.Namespaces, "\xff")
	require.Contains(t, life.Namespaces, "ok")
	require.Contains(t, life.Namespaces, "_other", "a namespace of that name is one")
	require.NotNil(t, life.OtherNamespaces)
	// The older build's 5, the two invalid states' and the lookup's.
	require.Equal(t, uint64(5+2+1), life.OtherNamespaces.Absent)
	require.NoError(t, c.Close())
	c = openCache(t, &Options{Dir: dir, Logger: nilLogger()})
	stored, err := c.rec.Counts()
	require.NoError(t, err)
	_, byNS := keptMeters(stored)
	require.NotContains(t, byNS, "\xff")
	require.Equal(t, uint64(5+2+1), c.Stats().LifetimeMeasured.OtherNamespaces.Absent)
	code, _ = scrape(t, NewCollector(c))
	require.Equal(t, http.StatusOK, code)
}

// A namespace measured by name in an earlier process stays so: a later
// process's misses in it count under its name (each warm command is a
// process), while a made-up one's still keep nothing.
func TestNamespaces_KnownFromEarlierProcesses(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	c, err := Open(&Options{Dir: dir, Logger: nilLogger()})
	require.NoError(t, err)
	require.NoError(t, c.Put(ctx, "outputs", "k", []byte("v"), nil))
	_, err = c.Get(ctx, "outputs", "k", nil)
	require.NoError(t, err)
	require.NoError(t, c.Close())

	c = openCache(t, &Options{Dir: dir, Logger: nilLogger()})
	for _, ns := range []string{"outputs", "made-up"} {
		_, err = c.Get(ctx, ns, "absent", nil)
		require.ErrorIs(t, err, errs.ErrNotFound)
	}
	require.Equal(t, 1, keptNamespaces(c))
	s := c.Stats()
	require.Equal(t, uint64(1), s.Namespaces["outputs"].Absent)
	require.Equal(t, uint64(1), s.OtherNamespaces.Absent)
	require.NotContains(t, s.Namespaces, "made-up")
}
