package l2

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/modelcache/modelcache/internal/third_party/badger"
)

var (
	fuzzGoldenOnce sync.Once
	fuzzGolden     []byte // a table of fuzzEntries small entries
	fuzzManifest   []byte
)

const fuzzEntries = 400

// FuzzOpenDamagedTable damages a table with the fuzzer's bytes (pairs of
// offset and XOR mask) and opens the store: Open repairs or refuses, never
// panics, and every read returns the right bytes or a miss.
func FuzzOpenDamagedTable(f *testing.F) {
	f.Add([]byte{0, 0, 0x10, 0x01})
	f.Add([]byte{0xff, 0xf0, 0xff, 0x80})
	f.Add([]byte{0x7f, 0xff, 0x40, 0x02, 0x08, 0x10})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xfe})
	f.Fuzz(func(t *testing.T, damage []byte) {
		fuzzGoldenOnce.Do(func() {
			dir, err := os.MkdirTemp("", "l2fuzz")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(dir)
			s, err := Open(&Options{Dir: dir, Logger: discardLogger()})
			if err != nil {
				t.Fatal(err)
			}
			for i := range fuzzEntries {
				if err := s.Put(fmt.Sprintf("%05d", i), "U8", nil, smallValue(i)); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if fuzzGolden, err = os.ReadFile(filepath.Join(dir, "000001.sst")); err != nil {
				t.Fatal(err)
			}
			if fuzzManifest, err = os.ReadFile(filepath.Join(dir, badger.ManifestFilename)); err != nil {
				t.Fatal(err)
			}
		})
		sst := append([]byte(nil), fuzzGolden...)
		for i := 0; i+3 <= len(damage) && i < 3*64; i += 3 {
			off := int(binary.BigEndian.Uint16(damage[i:])) * len(sst) / 65536
			sst[off] ^= damage[i+2] | 1
		}
		dir := t.TempDir()
		for name, b := range map[string][]byte{"000001.sst": sst, badger.ManifestFilename: fuzzManifest} {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		s, err := Open(&Options{Dir: dir, Logger: discardLogger()})
		if err != nil {
			return // refused with an error: allowed
		}
		defer s.Close()
		for i := range fuzzEntries {
			if v, err := s.Get(fmt.Sprintf("%05d", i)); err == nil && string(v.Data) != string(smallValue(i)) {
				t.Fatalf("entry %d: wrong bytes", i)
			}
		}
	})
}
