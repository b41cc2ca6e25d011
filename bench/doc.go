// Package bench compares modelcache's L1 with rival Go caches: hit ratios on
// public traces and a model-serving trace, replayed by the same harness
// (sim.Replay), and hit throughput. It is a module of its own so that users
// of modelcache never download the rivals.
//
//	cd bench && go test -run HitRatios -v        # the hit-ratio table
//	cd bench && go test -run '^$' -bench . -cpu 1,2
package bench
