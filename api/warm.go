package api

// WarmProgress is one line of POST PathWarm (tier.WarmProgress, which it
// converts to): the first carries the totals alone (Tensor ""), then one
// per tensor as it is stored (Stored) or found stored.
type WarmProgress struct {
	Tensor string
	Bytes  uint64
	Stored bool

	TotalTensors int
	TotalBytes   uint64
}

// WarmResult is what a warm did, the last line's "result"
// (tier.WarmResult, which it converts to).
type WarmResult struct {
	Path         string
	Tensors      int
	Written      int
	Skipped      int
	LogicalBytes uint64
	WrittenBytes uint64
}
