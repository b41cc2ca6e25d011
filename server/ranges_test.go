package server

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// countingReaderAt counts the reads of a value's bytes.
type countingReaderAt struct {
	r     io.ReaderAt
	calls atomic.Int64
	bytes atomic.Int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.calls.Add(1)
	n, err := c.r.ReadAt(p, off)
	c.bytes.Add(int64(n))
	return n, err
}

// A request's reads follow the ranges it may ask for: 3,000 one-byte
// ranges are refused before any read; MaxRanges are served with a read
// each.
func TestServeContent_RangesBounded(t *testing.T) {
	val := bytes.Repeat([]byte("0123456789"), 100_000)
	ask := func(n int) (*httptest.ResponseRecorder, *countingReaderAt) {
		specs := make([]string, n)
		for i := range specs {
			specs[i] = fmt.Sprintf("%d-%d", i*300, i*300)
		}
		r := httptest.NewRequest(http.MethodGet, "/v1/values/ns/k", nil)
		r.Header.Set("Range", "bytes="+strings.Join(specs, ","))
		cr := &countingReaderAt{r: bytes.NewReader(val)}
		w := httptest.NewRecorder()
		w.Header().Set("Content-Type", "application/octet-stream") // as the handlers do: no sniffing
		serveContent(w, r, io.NewSectionReader(cr, 0, int64(len(val))))
		return w, cr
	}
	w, cr := ask(3000)
	if w.Code != http.StatusRequestedRangeNotSatisfiable || cr.calls.Load() != 0 {
		t.Fatalf("3000 ranges: status %d after %d reads, want 416 after none", w.Code, cr.calls.Load())
	}
	if got := w.Header().Get("Content-Range"); got != fmt.Sprintf("bytes */%d", len(val)) {
		t.Errorf("Content-Range %q", got)
	}
	w, cr = ask(MaxRanges)
	if w.Code != http.StatusPartialContent {
		t.Fatalf("%d ranges: status %d", MaxRanges, w.Code)
	}
	if cr.calls.Load() > MaxRanges || cr.bytes.Load() > MaxRanges {
		t.Errorf("%d one-byte ranges: %d reads of %d bytes", MaxRanges, cr.calls.Load(), cr.bytes.Load())
	}
}

func TestCountRanges(t *testing.T) {
	for h, want := range map[string]int{
		"":                 0,
		"bytes=0-1":        1,
		"bytes=0-1,5-6,":   2,
		" bytes =0-1, 2-3": 2,
		"items=0-1,2-3":    0,
		"bytes=,,,":        0,
	} {
		if got := countRanges(h); got != want {
			t.Errorf("countRanges(%q) = %d, want %d", h, got, want)
		}
	}
}

// FuzzCountRanges: any header, no panic; and a request with no more than
// MaxRanges ranges by the count is one http.ServeContent would not answer
// with more parts.
func FuzzCountRanges(f *testing.F) {
	for _, s := range []string{"bytes=0-0", "bytes=0-1,3-4", "bytes=-5", "bytes=5-", "bytes=,,", "bytes = 1-2 , 3-4", "x=1-2", strings.Repeat("0-0,", 40)} {
		f.Add(s)
	}
	val := []byte("0123456789abcdefghijklmnopqrstuvwxyz")
	f.Fuzz(func(t *testing.T, h string) {
		n := countRanges(h)
		if n < 0 || n > len(h) {
			t.Fatalf("countRanges(%q) = %d", h, n)
		}
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Range", h)
		cr := &countingReaderAt{r: bytes.NewReader(val)}
		w := httptest.NewRecorder()
		w.Header().Set("Content-Type", "application/octet-stream")
		serveContent(w, r, io.NewSectionReader(cr, 0, int64(len(val))))
		if cr.calls.Load() > int64(MaxRanges)+1 {
			t.Fatalf("Range %q: %d reads", h, cr.calls.Load())
		}
	})
}
