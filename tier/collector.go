package tier

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports a Cache's measures to Prometheus. It reads Stats at
// each scrape: the cache's own counters and histograms cost the same with
// it registered or not.
type Collector struct {
	c *Cache
}

// NewCollector returns a collector of c's measures, to register with a
// prometheus.Registerer:
//
//	prometheus.MustRegister(tier.NewCollector(c))
//
// Metrics (kind is "tensor" or "value"; tier is l1, l2, source, fill or
// shared):
//
//	modelcache_requests_total{kind,tier}             requests served, by the tier that served them
//	modelcache_request_failures_total{kind}          requests that returned an error
//	modelcache_request_duration_seconds{kind,tier}   histogram of request times (L1 hits sampled 1 in 64, weighted by exact counts)
//	modelcache_miss_duration_seconds{kind}           histogram of source reads (tensors) and fills (values): Tr
//	modelcache_hit_ratio{kind}                       hits / requests served
//	modelcache_access_time_seconds{kind,estimate}    mean access time, estimate "formula" (HR·Tc + (1−HR)(Tc+Tr)) or "measured"
//	modelcache_namespace_requests_total{namespace,tier}  value requests by namespace
//	modelcache_namespace_hit_ratio{namespace}
//
// Namespaces are labels for the MaxNamespaceMeters busiest (Options), the
// rest together under namespace="_other" (OtherLabel): a scrape stays
// small whatever names clients make up.
//
//	modelcache_bytes{tier}                           bytes held: l1 (charged), l2 (stored), write_behind (queued)
//	modelcache_entries{tier}                         entries held in l1 and l2
//	modelcache_evictions_total{tier}                 entries evicted to make room
//	modelcache_l2_errors_total                       L2 reads that failed other than by a miss
//	modelcache_write_behind_dropped_total            L2 writes skipped because the queue was full
//	modelcache_l3_up                                 with L3: 1 while it answers, 0 while its breaker is open
//	modelcache_l3_events_total{event}                with L3: errors, leases, waits, writes, write_errors, write_dropped
func NewCollector(c *Cache) *Collector { return &Collector{c: c} }

var (
	descRequests = prometheus.NewDesc("modelcache_requests_total",
		"Requests served, by the tier that served them.", []string{"kind", "tier"}, nil)
	descFailures = prometheus.NewDesc("modelcache_request_failures_total",
		"Requests that returned an error.", []string{"kind"}, nil)
	descDuration = prometheus.NewDesc("modelcache_request_duration_seconds",
		"Time of requests, by the tier that served them (L1 hits sampled one in 64, weighted by exact counts).", []string{"kind", "tier"}, nil)
	descMiss = prometheus.NewDesc("modelcache_miss_duration_seconds",
		"Time of the source reads (tensors) and fills (values) of misses: Tr.", []string{"kind"}, nil)
	descHitRatio = prometheus.NewDesc("modelcache_hit_ratio",
		"Requests served by a cache tier over requests served.", []string{"kind"}, nil)
	descAccess = prometheus.NewDesc("modelcache_access_time_seconds",
		"Mean access time: by the formula HR*Tc + (1-HR)*(Tc+Tr), or measured.", []string{"kind", "estimate"}, nil)
	descNSRequests = prometheus.NewDesc("modelcache_namespace_requests_total",
		"Value requests by namespace and by the tier that served them.", []string{"namespace", "tier"}, nil)
	descNSHitRatio = prometheus.NewDesc("modelcache_namespace_hit_ratio",
		"Value requests of a namespace served by a cache tier over those served.", []string{"namespace"}, nil)
	descBytes = prometheus.NewDesc("modelcache_bytes",
		"Bytes held: l1 charged, l2 stored, write_behind queued.", []string{"tier"}, nil)
	descEntries = prometheus.NewDesc("modelcache_entries",
		"Entries held.", []string{"tier"}, nil)
	descEvictions = prometheus.NewDesc("modelcache_evictions_total",
		"Entries evicted to make room.", []string{"tier"}, nil)
	descL2Errors = prometheus.NewDesc("modelcache_l2_errors_total",
		"L2 reads that failed other than by a miss (served from the source instead).", nil, nil)
	descWBDropped = prometheus.NewDesc("modelcache_write_behind_dropped_total",
		"L2 writes skipped because the write-behind queue was full.", nil, nil)
	descL3Up = prometheus.NewDesc("modelcache_l3_up",
		"1 while the fleet tier answers, 0 while its breaker is open.", nil, nil)
	descL3Events = prometheus.NewDesc("modelcache_l3_events_total",
		"What the fleet tier did: errors (served from the source), leases taken, waits for another machine, writes, write_errors, write_dropped.", []string{"event"}, nil)
)

// Describe implements prometheus.Collector.
func (*Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRequests, descFailures, descDuration, descMiss, descHitRatio, descAccess,
		descNSRequests, descNSHitRatio, descBytes, descEntries, descEvictions, descL2Errors, descWBDropped, descL3Up, descL3Events} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (p *Collector) Collect(ch chan<- prometheus.Metric) {
	s := p.c.Stats()
	for _, k := range []struct {
		kind string
		m    Measures
	}{{"tensor", s.Tensors}, {"value", s.Values}} {
		for _, t := range k.m.Tiers {
			ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(t.Hits), k.kind, t.Tier)
			ch <- constHistogram(descDuration, t.Latency, k.kind, t.Tier)
		}
		ch <- prometheus.MustNewConstMetric(descFailures, prometheus.CounterValue, float64(k.m.Failed), k.kind)
		ch <- constHistogram(descMiss, k.m.MissLatency, k.kind)
		ch <- prometheus.MustNewConstMetric(descHitRatio, prometheus.GaugeValue, k.m.HitRate, k.kind)
		ch <- prometheus.MustNewConstMetric(descAccess, prometheus.GaugeValue, k.m.Formula.Seconds(), k.kind, "formula")
		ch <- prometheus.MustNewConstMetric(descAccess, prometheus.GaugeValue, k.m.Measured.Seconds(), k.kind, "measured")
	}
	collectNamespaces(ch, s.Measured)
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.GaugeValue, float64(s.L1.Bytes), "l1")
	ch <- prometheus.MustNewConstMetric(descEntries, prometheus.GaugeValue, float64(s.L1.Entries), "l1")
	ch <- prometheus.MustNewConstMetric(descEvictions, prometheus.CounterValue, float64(s.L1.Evictions), "l1")
	if p.c.l2 != nil {
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.GaugeValue, float64(s.L2.StoredBytes), "l2")
		ch <- prometheus.MustNewConstMetric(descEntries, prometheus.GaugeValue, float64(s.L2.Entries), "l2")
		ch <- prometheus.MustNewConstMetric(descEvictions, prometheus.CounterValue, float64(s.L2.Evictions), "l2")
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.GaugeValue, float64(p.c.wb.queuedBytes()), "write_behind")
	}
	if s.L3.Enabled {
		up := 1.0
		if s.L3.Down {
			up = 0
		}
		ch <- prometheus.MustNewConstMetric(descL3Up, prometheus.GaugeValue, up)
		for event, n := range map[string]uint64{"errors": s.L3.Errors, "leases": s.L3.Leases, "waits": s.L3.Waits,
			"writes": s.L3.Writes, "write_errors": s.L3.WriteErrors, "write_dropped": s.L3.WriteDropped} {
			ch <- prometheus.MustNewConstMetric(descL3Events, prometheus.CounterValue, float64(n), event)
		}
	}
	ch <- prometheus.MustNewConstMetric(descL2Errors, prometheus.CounterValue, float64(s.L2Errors))
	ch <- prometheus.MustNewConstMetric(descWBDropped, prometheus.CounterValue, float64(s.WriteBehindDropped))
}

// OtherLabel is the namespace label of the namespaces measured together
// (Stats' OtherNamespaces): all but the MaxNamespaceMeters busiest.
const OtherLabel = "_other"

// collectNamespaces sends the metrics by namespace. A label value is valid
// UTF-8 whatever a name holds (a name no entry point accepts may come from
// an older build's L2): one that is not is spelled with U+FFFD, and names
// that come to one label (such a spelling, a namespace called "_other")
// share its series, so that no scrape fails on a duplicate.
func collectNamespaces(ch chan<- prometheus.Metric, s Measured) {
	type series struct {
		tiers        []string
		hits         map[string]uint64
		cached, seen uint64 // requests served by a cache tier; served
	}
	byLabel := map[string]*series{}
	add := func(label string, m Measures) {
		label = strings.ToValidUTF8(label, "\uFFFD")
		sr := byLabel[label]
		if sr == nil {
			sr = &series{hits: map[string]uint64{}}
			byLabel[label] = sr
		}
		for _, t := range m.Tiers {
			if _, ok := sr.hits[t.Tier]; !ok {
				sr.tiers = append(sr.tiers, t.Tier)
			}
			sr.hits[t.Tier] += t.Hits
		}
		sr.cached += m.Hits
		sr.seen += m.Hits + m.Misses
	}
	for ns, m := range s.Namespaces {
		add(ns, m)
	}
	if s.OtherNamespaces != nil {
		add(OtherLabel, *s.OtherNamespaces)
	}
	for label, sr := range byLabel {
		for _, t := range sr.tiers {
			if m, err := prometheus.NewConstMetric(descNSRequests, prometheus.CounterValue, float64(sr.hits[t]), label, t); err == nil {
				ch <- m
			}
		}
		ratio := 0.0
		if sr.seen > 0 {
			ratio = float64(sr.cached) / float64(sr.seen)
		}
		if m, err := prometheus.NewConstMetric(descNSHitRatio, prometheus.GaugeValue, ratio, label); err == nil {
			ch <- m
		}
	}
}

// constHistogram converts a Latency to a Prometheus histogram in seconds.
func constHistogram(d *prometheus.Desc, l Latency, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(l.Buckets))
	var cum uint64
	for i, n := range l.Buckets {
		cum += n
		if i < len(BucketBounds)-1 {
			buckets[BucketBounds[i].Seconds()] = cum
		}
	}
	return prometheus.MustNewConstHistogram(d, l.Count, l.Sum.Seconds(), buckets, labels...)
}
