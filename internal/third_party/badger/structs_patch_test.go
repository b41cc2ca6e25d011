package badger

import (
	"bytes"
	"testing"
)

// modelcache patch: a damaged value-log entry header is an error, never a
// panic or a length that wraps round.
func TestHeaderDecodeChecked(t *testing.T) {
	good := make([]byte, maxHeaderSize)
	n := header{klen: 29, vlen: 75004, expiresAt: 7, meta: 1}.Encode(good)
	var h header
	if got, err := h.decodeChecked(good[:n]); err != nil || got != n || h.klen != 29 || h.vlen != 75004 || h.expiresAt != 7 {
		t.Fatalf("good header: %d %v %+v", got, err, h)
	}
	for name, b := range map[string][]byte{
		"empty":           {},
		"one byte":        {0},
		"varint of 0xff":  append([]byte{0, 0}, bytes.Repeat([]byte{0xff}, 12)...),
		"cut short":       {0, 0, 0x80},
		"key length 2^33": {0, 0, 0x80, 0x80, 0x80, 0x80, 0x20, 1, 0},
	} {
		if _, err := h.decodeChecked(b); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	// Upstream's Decode: a varint that overflows moves the index backwards.
	func() {
		defer func() { _ = recover() }()
		h.Decode(append([]byte{0, 0}, bytes.Repeat([]byte{0xff}, 12)...))
		t.Log("Decode did not panic on an overflowing varint")
	}()
}
