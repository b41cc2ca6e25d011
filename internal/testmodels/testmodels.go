// Package testmodels builds model files for tests and benchmarks: synthetic
// models with the statistics of trained weights, and a corpus of malformed
// files that every layer (loader, tier, the CLI) must refuse.
package testmodels

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Seed returns the seed of a randomized test: the value of the environment
// variable env if set, else a new one. It logs the seed so that a failure can
// be replayed.
func Seed(tb testing.TB, env string) uint64 {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(env); s != "" {
		if v, err := strconv.ParseUint(s, 10, 64); err == nil {
			seed = v
		}
	}
	tb.Logf("seed %d (set %s=%d to replay)", seed, env, seed)
	return seed
}

// Build assembles a safetensors file from a raw JSON header and data.
func Build(head string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(head)))
	b = append(b, head...)
	return append(b, data...)
}

// OKHead is a valid header for 8 bytes of data.
const OKHead = `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`

// Case is a malformed file and a phrase its error must contain, so that a
// user learns what is wrong.
type Case struct {
	File []byte
	Want string
}

// Malformed returns safetensors files that must be refused, by the kind of
// defect. Each call builds them anew.
func Malformed() map[string]Case {
	eight := make([]byte, 8)
	deep := strings.Repeat("[", 100000) + strings.Repeat("]", 100000)
	lie := func(n uint64, rest []byte) []byte {
		return append(binary.LittleEndian.AppendUint64(nil, n), rest...)
	}
	return map[string]Case{
		"empty file":             {nil, "too short"},
		"truncated prefix":       {[]byte{1, 2, 3}, "too short"},
		"zero header length":     {lie(0, eight), "empty header"},
		"header past EOF":        {lie(1000, []byte(OKHead)), "past the end"},
		"header length huge":     {lie(math.MaxUint64, []byte(OKHead)), "exceeds"},
		"header length 100MB+1":  {lie(100_000_001, []byte(OKHead)), "exceeds"},
		"truncated data":         {Build(OKHead, make([]byte, 4)), "past the 4 bytes"},
		"extra data":             {Build(OKHead, make([]byte, 12)), "holds 12 bytes"},
		"not JSON":               {Build("{not json}", nil), "header JSON"},
		"not an object":          {Build(`["a"]`, nil), "start with '{'"},
		"invalid UTF-8":          {Build("{\"\xff\":1}", nil), "UTF-8"},
		"deep nesting":           {Build(`{"a":`+deep+`}`, nil), "want \"{\""},
		"deep nesting metadata":  {Build(`{"__metadata__":{"k":`+deep+`}}`, nil), "want a string"},
		"unknown dtype":          {Build(`{"a":{"dtype":"F31","shape":[2],"data_offsets":[0,8]}}`, eight), "unknown dtype"},
		"shape size mismatch":    {Build(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, eight), "12 bytes, data_offsets span 8"},
		"shape overflow":         {Build(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, eight), "overflows"},
		"negative dim":           {Build(`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, eight), "non-negative"},
		"fractional offset":      {Build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8.0]}}`, eight), "non-negative"},
		"offsets reversed":       {Build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}`, eight), "end before"},
		"three offsets":          {Build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,9]}}`, eight), "exactly two"},
		"offset out of range":    {Build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}`, eight), "gap in data"},
		"huge offsets":           {Build(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551614,18446744073709551615]}}`, eight), "gap in data"},
		"overlapping tensors":    {Build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, eight), "overlaps"},
		"gap between tensors":    {Build(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[2],"data_offsets":[6,8]}}`, eight), "gap in data"},
		"duplicate tensor name":  {Build(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, eight), "appears twice"},
		"duplicate field":        {Build(`{"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, eight), "dtype given twice"},
		"missing shape":          {Build(`{"a":{"dtype":"F32","data_offsets":[0,8]}}`, eight), "no shape"},
		"unknown field":          {Build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}}`, eight), "unknown field"},
		"metadata not strings":   {Build(`{"__metadata__":{"k":1},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, eight), "want a string"},
		"metadata duplicate key": {Build(`{"__metadata__":{"k":"1","k":"2"}}`, nil), "appears twice"},
		"trailing garbage":       {Build(OKHead+`x`, eight), "after its JSON"},
		"too many dims":          {Build(`{"a":{"dtype":"U8","shape":[`+strings.Repeat("1,", 64)+`1],"data_offsets":[0,1]}}`, eight[:1]), "more than 64 dims"},
		"tensor is a string":     {Build(`{"a":"F32"}`, nil), "want \"{\""},
	}
}

// SyntheticLayout lists the tensors of a transformer-like BF16 model of about
// size bytes: an embedding, then layers of attention and MLP weights and
// norms, the shapes real checkpoints have.
func SyntheticLayout(size int64) (names []string, shapes [][]uint64) {
	const d, vocab = 2048, 32000
	add := func(name string, shape ...uint64) {
		names = append(names, name)
		shapes = append(shapes, shape)
	}
	add("model.embed_tokens.weight", vocab, d)
	total := int64(vocab * d * 2)
	for l := 0; total < size; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		add(p+"input_layernorm.weight", d)
		for _, m := range []string{"q", "k", "v", "o"} {
			add(p+"self_attn."+m+"_proj.weight", d, d)
		}
		add(p+"post_attention_layernorm.weight", d)
		add(p+"mlp.up_proj.weight", 4*d, d)
		add(p+"mlp.down_proj.weight", d, 4*d)
		total += 2 * (2*d + 4*d*d + 8*d*d)
	}
	return names, shapes
}

// WriteSyntheticBF16 writes a safetensors model of about size bytes whose
// weights are drawn, tensor by tensor, from N(0, σ²) with σ between 0.01 and
// 0.03 (norm weights near 1), rounded to BF16: byte statistics like those of
// a trained transformer. It streams, so memory stays small.
func WriteSyntheticBF16(path string, size int64, seed uint64) error {
	names, shapes := SyntheticLayout(size)
	type entry struct {
		DType   string    `json:"dtype"`
		Shape   []uint64  `json:"shape"`
		Offsets [2]uint64 `json:"data_offsets"`
	}
	var head strings.Builder
	head.WriteString("{")
	var off uint64
	for i, name := range names {
		n := uint64(2)
		for _, d := range shapes[i] {
			n *= d
		}
		b, err := json.Marshal(entry{"BF16", shapes[i], [2]uint64{off, off + n}})
		if err != nil {
			return err
		}
		if i > 0 {
			head.WriteString(",")
		}
		fmt.Fprintf(&head, "%q:%s", name, b)
		off += n
	}
	head.WriteString("}")
	for head.Len()%8 != 0 {
		head.WriteString(" ")
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if err := binary.Write(w, binary.LittleEndian, uint64(head.Len())); err != nil {
		f.Close()
		return err
	}
	w.WriteString(head.String())
	r := rand.New(rand.NewPCG(seed, 7))
	// Elements go to w a block at a time: one Write per element cost
	// minutes for 256 MiB under -race.
	buf := make([]byte, 0, 64<<10)
	for i, name := range names {
		n := uint64(1)
		for _, d := range shapes[i] {
			n *= d
		}
		sigma, mean := 0.01+0.02*r.Float64(), 0.0
		if strings.HasSuffix(name, "norm.weight") {
			sigma, mean = 0.05, 1
		}
		for range n {
			bits := math.Float32bits(float32(mean + r.NormFloat64()*sigma))
			bits += 0x7fff + (bits>>16)&1 // round to nearest even
			buf = binary.LittleEndian.AppendUint16(buf, uint16(bits>>16))
			if len(buf) == cap(buf) {
				w.Write(buf)
				buf = buf[:0]
			}
		}
	}
	w.Write(buf)
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
