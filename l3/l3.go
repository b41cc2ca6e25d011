// Package l3 is modelcache's fleet tier: entries in the serialize format
// (chunked, compressed, CRC-checked) kept in Redis, a single node or a Redis
// Cluster, for every machine of a fleet to share.
//
// # Layout
//
// An entry under key K is stored as separate Redis keys, all with the
// entry's TTL:
//
//	<prefix>m:<h>           its meta: the write's id, when written, K, the serialize header
//	<prefix>c:<h>:<id>:<i>  chunk i (at most 4 MiB) of the write with that id
//
// where h is a hash of K. Chunk keys carry no hash tag, so one entry's
// chunks spread over every shard of a cluster and are read from all of them
// at once; big keys, which stall slot migration and failover, never exist.
// Chunks are written first and the meta last: the meta is the commit point,
// and a reader that finds it finds the chunks of that write (a new write has
// a new id). Redis may evict any key on its own (maxmemory with allkeys-lru
// is the fleet's budget): a missing chunk is a miss, never an error.
//
// # Integrity and secrecy
//
// Every chunk is checked against the CRC-32C the meta gives it, so a chunk
// overwritten by another client, or torn, is detected and the entry dropped.
// With a fleet key (Options.FleetKey) the meta and every chunk are sealed with
// AES-GCM, the Redis key name as associated data: a value forged, read, or
// moved to another key by a client without the key is detected and dropped,
// never served; leases and epochs are sealed too. Without one, Redis is
// trusted not to be written by others: still, no record it holds is
// trusted to say how much to allocate (a meta is checked against what the
// reader expects, Expect, and every record is read with GETRANGE, no
// longer than it can be), nor to keep an entry past its writer's expiry,
// nor to make a reader wait past one lease period without renewal, nor to
// open the breaker (a malformed record is errs.ErrCorrupt).
//
// # Fleet-wide singleflight
//
// Lease (SET NX PX, renewed while held) elects one machine to read the
// origin for an entry; the others Await the entry (or the lease's end, and
// then take over). A lease no holder can have set is not waited for.
//
// # Faults
//
// Every operation is bounded by Options.Timeout and its context. A breaker
// counts consecutive failures: past Options.BreakerFailures it opens for a
// cool-down (doubling up to a minute) during which every operation fails at
// once with ErrUnavailable, so that a sick Redis cannot slow every read;
// then one operation probes it. go-redis redials by itself.
package l3

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/loader"
	"github.com/modelcache/modelcache/serialize"
)

// ErrUnavailable: the fleet tier is not answering (down, slow, or the
// breaker is open); read from the next tier.
var ErrUnavailable = errors.New("l3: unavailable")

// Options configures a Store.
type Options struct {
	// Addrs are host:port of one Redis node, or of several nodes of one
	// Redis Cluster (Cluster: of one node of a cluster). Required.
	Addrs   []string
	Cluster bool
	// Username and Password authenticate (Redis ACL); PasswordFile, if
	// set, holds the password (a trailing newline is ignored), so that it
	// never appears on a command line.
	Username, Password, PasswordFile string
	// DB is the database number of a single node (a cluster has only 0).
	DB int
	// TLS: connect with TLS; TLSCAFile, if set, is the CA bundle that
	// signed the servers' certificates (default: the system's).
	TLS       bool
	TLSCAFile string
	// FleetKey (16, 24 or 32 bytes) seals every meta and chunk with
	// AES-GCM; every machine of the fleet needs the same key.
	FleetKey []byte
	// Prefix starts every key (default "mc:"): fleets sharing a Redis use
	// different prefixes.
	Prefix string
	// ChunkSize is the logical size of a chunk, at most 4 MiB (default).
	ChunkSize int
	// Timeout bounds each Redis operation (default 2 s).
	Timeout time.Duration
	// Parallel is how many chunks one read or write has in flight
	// (default 16).
	Parallel int
	// BreakerFailures opens the breaker after that many consecutive
	// failures (default 5); BreakerCooldown is its first cool-down
	// (default 1 s).
	BreakerFailures int
	BreakerCooldown time.Duration
	// LeasePeriod is how long a lease lives unless its holder renews it
	// (every third of it); default 10 s. A waiter trusts no
	// lease with a longer TTL, or none, so no lease makes a read wait
	// longer than one period past its holder's last renewal.
	LeasePeriod time.Duration
	// Clock tells the time of the expiry written into each meta and
	// checked at every read, and of sealed leases; default time.Now.
	Clock func() time.Time
}

// DefaultMaxLength bounds the entries Get reads: a meta that announces a
// longer one is corrupt, and nothing is allocated for it.
const DefaultMaxLength = 4 << 30

// Expect is what a reader knows of an entry before it reads it. A meta
// that says otherwise is corrupt: the entry is a miss, dropped, and nothing
// is allocated for it.
type Expect struct {
	// MaxLength bounds the entry's length; 0 is DefaultMaxLength.
	MaxLength uint64
	// Exact: the entry is DType, Shape and Length exactly (a tensor whose
	// file says so).
	Exact  bool
	DType  string
	Shape  []uint64
	Length uint64
}

// maxLength is the longest entry want admits.
func (want *Expect) maxLength() uint64 {
	switch {
	case want == nil || (!want.Exact && want.MaxLength == 0):
		return DefaultMaxLength
	case want.Exact:
		return want.Length
	}
	return want.MaxLength
}

// MaxChunk is the largest chunk l3 writes: bigger keys stall a cluster's
// slot migration and failover.
const MaxChunk = 4 << 20

// Store is a fleet tier on Redis. It is safe for concurrent use.
type Store struct {
	rdb      redis.UniversalClient
	codecs   *serialize.Codecs
	aead     cipher.AEAD // nil without a fleet key
	prefix   string
	timeout  time.Duration
	parallel int
	br       breaker
	period   time.Duration // of leases
	now      func() time.Time
}

// Value is an entry read from L3.
type Value struct {
	DType   string
	Shape   []uint64
	Data    []byte
	Written time.Time
	Expires time.Time // zero: never
}

// Open connects to Redis (lazily: a Redis that is down at Open is an error
// of the first operations, and the Store retries by itself).
func Open(o *Options) (*Store, error) {
	if o == nil || len(o.Addrs) == 0 {
		return nil, errors.New("l3: no Redis address")
	}
	chunk := o.ChunkSize
	if chunk == 0 {
		chunk = MaxChunk
	}
	if chunk > MaxChunk {
		return nil, fmt.Errorf("l3: chunk size %d above %d", chunk, MaxChunk)
	}
	codecs, err := serialize.New(&serialize.Options{ChunkSize: chunk})
	if err != nil {
		return nil, err
	}
	s := &Store{codecs: codecs, prefix: o.Prefix, timeout: o.Timeout, parallel: o.Parallel}
	if s.prefix == "" {
		s.prefix = "mc:"
	}
	if s.timeout <= 0 {
		s.timeout = 2 * time.Second
	}
	if s.parallel <= 0 {
		s.parallel = 16
	}
	s.period, s.now = o.LeasePeriod, o.Clock
	if s.period <= 0 {
		s.period = leaseTTL
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.br = breaker{limit: o.BreakerFailures, cooldown: o.BreakerCooldown}
	if s.br.limit <= 0 {
		s.br.limit = 5
	}
	if s.br.cooldown <= 0 {
		s.br.cooldown = time.Second
	}
	if len(o.FleetKey) > 0 {
		block, err := aes.NewCipher(o.FleetKey)
		if err != nil {
			return nil, fmt.Errorf("l3: fleet key: %w", err)
		}
		if s.aead, err = cipher.NewGCM(block); err != nil {
			return nil, err
		}
	}
	password := o.Password
	if o.PasswordFile != "" {
		b, err := os.ReadFile(o.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("l3: password file: %w", err)
		}
		password = string(bytes.TrimRight(b, "\r\n"))
	}
	var tc *tls.Config
	if o.TLS || o.TLSCAFile != "" {
		tc = &tls.Config{MinVersion: tls.VersionTLS12}
		if o.TLSCAFile != "" {
			pem, err := os.ReadFile(o.TLSCAFile)
			if err != nil {
				return nil, fmt.Errorf("l3: CA file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("l3: %s: no certificate in it", o.TLSCAFile)
			}
			tc.RootCAs = pool
		}
	}
	uo := &redis.UniversalOptions{
		Addrs: o.Addrs, Username: o.Username, Password: password, TLSConfig: tc, DB: o.DB,
		DialTimeout: s.timeout, ReadTimeout: s.timeout, WriteTimeout: s.timeout,
		PoolSize: 4 * s.parallel, MaxRetries: 2,
		// Several addresses are a cluster's nodes; one address is a single
		// node unless Cluster says otherwise.
		IsClusterMode: o.Cluster || len(o.Addrs) > 1,
		// Redis before 7.2 does not know CLIENT SETINFO.
		DisableIdentity: true,
	}
	s.rdb = redis.NewUniversalClient(uo)
	return s, nil
}

// Close closes the connections.
func (s *Store) Close() error {
	s.codecs.Close()
	return s.rdb.Close()
}

// Client is the Redis client, for tests and tools.
func (s *Store) Client() redis.UniversalClient { return s.rdb }

func (s *Store) hash(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:16])
}

func (s *Store) metaKey(h string) string  { return s.prefix + "m:" + h }
func (s *Store) leaseKey(h string) string { return s.prefix + "l:" + h }
func (s *Store) chunkKey(h string, id []byte, i int) string {
	return s.prefix + "c:" + h + ":" + hex.EncodeToString(id) + ":" + strconv.Itoa(i)
}

// op runs fn within the breaker and the timeout; a Redis nil (a missing
// key) is a success of the operation.
func (s *Store) op(ctx context.Context, fn func(ctx context.Context) error) error {
	if !s.br.allow() {
		return ErrUnavailable
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	err := fn(ctx)
	if wrongType(err) {
		// Another client wrote a list or a hash under one of our names:
		// a damaged record, not a sick Redis.
		err = fmt.Errorf("l3: %w: %w", errs.ErrCorrupt, err)
	}
	switch {
	case err == nil || errors.Is(err, redis.Nil) || errors.Is(err, errs.ErrNotFound) || errors.Is(err, errs.ErrCorrupt):
		s.br.success()
	case errors.Is(err, context.Canceled):
		// The caller gave up: says nothing of Redis. A probe that gave up
		// lets the next operation probe.
		s.br.abandon()
	default:
		s.br.failure()
		// go-redis refreshes a cluster's slot map on MOVED and ASK, not
		// when a node stops answering: after a failover it would dial the
		// dead master until then. Ask for a refresh (coalesced, in the
		// background).
		if cc, ok := s.rdb.(*redis.ClusterClient); ok {
			cc.ReloadState(context.Background())
		}
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// wrongType says whether err is Redis's answer to a command on a key that
// holds another type.
func wrongType(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.Contains(re.Error(), "WRONGTYPE")
}

const (
	metaMagic = "MCL3"
	idLen     = 12
)

// meta is an entry's commit record.
type meta struct {
	id               []byte
	written, expires int64 // Unix nanoseconds; expires 0: never
	key              string
	header           *serialize.Header
}

func (m *meta) encode() ([]byte, error) {
	b := append([]byte(metaMagic), 1)
	b = append(b, m.id...)
	b = binary.LittleEndian.AppendUint64(b, uint64(m.written))
	b = binary.LittleEndian.AppendUint64(b, uint64(m.expires))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.key)))
	b = append(b, m.key...)
	return m.header.AppendBinary(b)
}

func decodeMeta(b []byte) (*meta, error) {
	bad := func(what string) (*meta, error) {
		return nil, fmt.Errorf("l3: %w: meta %s", errs.ErrCorrupt, what)
	}
	fixed := len(metaMagic) + 1 + idLen + 16 + 4
	if len(b) < fixed || string(b[:4]) != metaMagic {
		return bad("too short or not a meta")
	}
	if b[4] != 1 {
		return nil, fmt.Errorf("l3: %w: meta version %d", errs.ErrVersion, b[4])
	}
	m := &meta{id: bytes.Clone(b[5 : 5+idLen])}
	p := 5 + idLen
	m.written = int64(binary.LittleEndian.Uint64(b[p:]))
	m.expires = int64(binary.LittleEndian.Uint64(b[p+8:]))
	n := int(binary.LittleEndian.Uint32(b[p+16:]))
	p += 20
	if n > len(b)-p {
		return bad("key length")
	}
	m.key = string(b[p : p+n])
	h, used, err := serialize.ParseHeader(b[p+n:])
	if err != nil {
		return nil, err
	}
	if used != len(b)-p-n {
		return bad("trailing bytes")
	}
	if h.ChunkSize > MaxChunk {
		return bad(fmt.Sprintf("chunk size %d above %d", h.ChunkSize, MaxChunk))
	}
	if err := checkShape(h); err != nil {
		return bad(err.Error())
	}
	m.header = h
	return m, nil
}

// checkShape requires a dtype of whole-byte elements and a shape to say
// the length.
func checkShape(h *serialize.Header) error {
	size := loader.DType(h.DType).Size()
	if size == 0 || len(h.Shape) == 0 {
		return nil
	}
	n := uint64(size)
	for _, d := range h.Shape {
		hi, lo := bits.Mul64(n, d)
		if hi != 0 {
			return errors.New("shape overflows")
		}
		n = lo
	}
	if n != h.Length {
		return fmt.Errorf("shape %v of %.16q says %d bytes, length %d", h.Shape, h.DType, n, h.Length)
	}
	return nil
}

// check says whether m is an entry want admits.
func (m *meta) check(want *Expect) error {
	h := m.header
	if max := want.maxLength(); h.Length > max {
		return fmt.Errorf("l3: %w: meta of an entry of %d bytes, at most %d expected", errs.ErrCorrupt, h.Length, max)
	}
	if want != nil && want.Exact && (h.DType != want.DType || !slices.Equal(h.Shape, want.Shape)) {
		return fmt.Errorf("l3: %w: meta of a %.16q %v entry, %.16q %v expected", errs.ErrCorrupt, h.DType, h.Shape, want.DType, want.Shape)
	}
	return nil
}

// maxMetaLen bounds the stored meta of an entry of at most length bytes
// under a key of keyLen bytes: what is read of a meta before it is parsed.
func (s *Store) maxMetaLen(keyLen int, length uint64) int64 {
	const header = 4 + 2 + 1 + serialize.MaxDTypeLen + 1 + 8*serialize.MaxDims + 8 + 4 + 4 + 4
	chunks := uint64(serialize.NumChunks(length, serialize.MinChunkSize))
	n := uint64(len(metaMagic)+1+idLen+16+4+keyLen+header) + 9*chunks
	if s.aead != nil {
		n += uint64(s.aead.NonceSize() + s.aead.Overhead())
	}
	return int64(n)
}

// sealedLen is the stored length of n bytes sealed.
func (s *Store) sealedLen(n int) int {
	if s.aead == nil {
		return n
	}
	return n + s.aead.NonceSize() + s.aead.Overhead()
}

// getBounded reads the string under name, at most limit bytes of it: a
// missing key (or an empty string) is redis.Nil, a longer one errs.ErrCorrupt,
// and no more than limit+1 bytes are ever received.
func (s *Store) getBounded(ctx context.Context, name string, limit int64) ([]byte, error) {
	var raw []byte
	err := s.op(ctx, func(ctx context.Context) error {
		var err error
		raw, err = s.rdb.GetRange(ctx, name, 0, limit).Bytes()
		return err
	})
	switch {
	case err != nil:
		return nil, err
	case len(raw) == 0:
		return nil, redis.Nil
	case int64(len(raw)) > limit:
		return nil, fmt.Errorf("l3: %w: %s: more than the %d bytes expected", errs.ErrCorrupt, name, limit)
	}
	return raw, nil
}

// seal and unseal apply the fleet key, if any, with the Redis key name as
// associated data.
func (s *Store) seal(name string, b []byte) []byte {
	if s.aead == nil {
		return b
	}
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(b)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return s.aead.Seal(nonce, nonce, b, []byte(name))
}

func (s *Store) unseal(name string, b []byte) ([]byte, error) {
	if s.aead == nil {
		return b, nil
	}
	ns := s.aead.NonceSize()
	if len(b) < ns+s.aead.Overhead() {
		return nil, fmt.Errorf("l3: %w: %s: sealed value too short", errs.ErrCorrupt, name)
	}
	out, err := s.aead.Open(nil, b[:ns], b[ns:], []byte(name))
	if err != nil {
		return nil, fmt.Errorf("l3: %w: %s: does not authenticate with the fleet key", errs.ErrCorrupt, name)
	}
	return out, nil
}

// readMeta reads the meta of key, of an entry want admits; errs.ErrNotFound
// if there is none (or it expired). raw is the meta as stored.
func (s *Store) readMeta(ctx context.Context, key string, want *Expect) (m *meta, raw []byte, err error) {
	h := s.hash(key)
	name := s.metaKey(h)
	raw, err = s.getBounded(ctx, name, s.maxMetaLen(len(key), want.maxLength()))
	if errors.Is(err, redis.Nil) {
		return nil, nil, errs.ErrNotFound
	}
	if err != nil {
		return nil, nil, err
	}
	plain, err := s.unseal(name, raw)
	if err != nil {
		return nil, nil, err
	}
	if m, err = decodeMeta(plain); err != nil {
		return nil, nil, fmt.Errorf("%w (%s)", err, name)
	}
	if m.key != key {
		return nil, nil, fmt.Errorf("l3: %w: meta of another key under %s", errs.ErrCorrupt, name)
	}
	if err := m.check(want); err != nil {
		return nil, nil, fmt.Errorf("%w (%s)", err, name)
	}
	return m, raw, nil
}

// Get reads the entry under key: errs.ErrNotFound if it is not there whole
// (never written, expired, a chunk evicted), ErrUnavailable if Redis does
// not answer, errs.ErrCorrupt if a chunk does not match its meta (the
// entry is then deleted).
//
// An entry past the expiry its writer sealed into the meta is a miss, even
// if its keys lost their TTL.
func (s *Store) Get(ctx context.Context, key string) (*Value, error) {
	return s.GetInto(ctx, key, nil, nil)
}

// GetInto is Get of an entry want admits (nil: any of at most
// DefaultMaxLength bytes), decoded into the buffer alloc returns (nil: a
// new one), called once the meta is read and checked.
func (s *Store) GetInto(ctx context.Context, key string, want *Expect, alloc func(dtype string, shape []uint64, n uint64) ([]byte, error)) (*Value, error) {
	m, raw, err := s.readMeta(ctx, key, want)
	if err != nil {
		return nil, s.dropIfCorrupt(ctx, key, err)
	}
	if m.expires != 0 && s.now().UnixNano() >= m.expires {
		// Its keys outlived it (PERSIST by another client, or a clock
		// ahead of the writer's): drop this meta, unless rewritten since.
		name := s.metaKey(s.hash(key))
		_ = s.op(context.WithoutCancel(ctx), func(ctx context.Context) error {
			return releaseScript.Run(ctx, s.rdb, []string{name}, raw).Err()
		})
		return nil, fmt.Errorf("l3: %s expired: %w", name, errs.ErrNotFound)
	}
	h := m.header
	var out []byte
	if alloc != nil {
		if out, err = alloc(h.DType, h.Shape, h.Length); err == nil && uint64(len(out)) != h.Length {
			err = fmt.Errorf("l3: buffer of %d bytes for an entry of %d", len(out), h.Length)
		}
		if err != nil {
			return nil, err
		}
	} else {
		out = make([]byte, h.Length)
	}
	hk := s.hash(key)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.parallel)
	for i := range h.Chunks {
		g.Go(func() error {
			name := s.chunkKey(hk, m.id, i)
			raw, err := s.getBounded(gctx, name, int64(s.sealedLen(int(h.Chunks[i].StoredLen))))
			if errors.Is(err, redis.Nil) {
				return fmt.Errorf("l3: chunk %d of %d: %w", i, len(h.Chunks), errs.ErrNotFound)
			}
			if err != nil {
				return err
			}
			plain, err := s.unseal(name, raw)
			if err != nil {
				return err
			}
			start := i * int(h.ChunkSize)
			return s.codecs.DecodeChunk(h, i, out[start:start+h.ChunkLen(i)], plain)
		})
	}
	if err := g.Wait(); err != nil {
		return nil, s.dropIfCorrupt(ctx, key, err)
	}
	v := &Value{DType: h.DType, Shape: h.Shape, Data: out, Written: time.Unix(0, m.written)}
	if m.expires != 0 {
		v.Expires = time.Unix(0, m.expires)
	}
	return v, nil
}

// dropIfCorrupt deletes the meta of a damaged entry, so that the next
// reader misses at once and the next writer replaces it; err is returned
// as it was.
func (s *Store) dropIfCorrupt(ctx context.Context, key string, err error) error {
	if errors.Is(err, errs.ErrCorrupt) {
		name := s.metaKey(s.hash(key))
		_ = s.op(context.WithoutCancel(ctx), func(ctx context.Context) error { return s.rdb.Del(ctx, name).Err() })
	}
	return err
}

// Ping checks that Redis answers (every node of a cluster).
func (s *Store) Ping(ctx context.Context) error {
	return s.op(ctx, func(ctx context.Context) error {
		if cc, ok := s.rdb.(*redis.ClusterClient); ok {
			return cc.ForEachShard(ctx, func(ctx context.Context, c *redis.Client) error { return c.Ping(ctx).Err() })
		}
		return s.rdb.Ping(ctx).Err()
	})
}

// Has reports whether the meta of key is there (its chunks may be gone).
func (s *Store) Has(ctx context.Context, key string) (bool, error) {
	var n int64
	err := s.op(ctx, func(ctx context.Context) error {
		var err error
		n, err = s.rdb.Exists(ctx, s.metaKey(s.hash(key))).Result()
		return err
	})
	return n == 1, err
}

// Put stores data under key to live for ttl (0: until Redis evicts it).
func (s *Store) Put(ctx context.Context, key, dtype string, shape []uint64, data []byte, ttl time.Duration) error {
	return s.PutStream(ctx, key, dtype, shape, uint64(len(data)), bytes.NewReader(data), ttl)
}

// PutStream stores the length bytes r yields under key, a chunk at a time
// (Parallel chunks in flight), then its meta. Nothing is visible before the
// meta; a failed write leaves its chunks to expire (with a TTL) or to
// Redis's eviction.
func (s *Store) PutStream(ctx context.Context, key, dtype string, shape []uint64, length uint64, r io.Reader, ttl time.Duration) error {
	cs := s.codecs.ChunkSize()
	h := &serialize.Header{DType: dtype, Shape: slices.Clone(shape), Length: length, ChunkSize: uint32(cs)}
	if err := h.CheckLength(); err != nil {
		return err
	}
	if err := checkShape(h); err != nil {
		// Every reader would drop it.
		return fmt.Errorf("l3: %w: %s", errs.ErrInvalidArgument, err)
	}
	n := serialize.NumChunks(length, h.ChunkSize)
	h.Chunks = make([]serialize.ChunkInfo, n)
	id := make([]byte, idLen)
	if _, err := rand.Read(id); err != nil {
		return err
	}
	hk := s.hash(key)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.parallel)
	var readErr error
	for i := range n {
		buf := make([]byte, h.ChunkLen(i))
		if _, err := io.ReadFull(r, buf); err != nil {
			readErr = fmt.Errorf("l3: reading chunk %d of %d: %w", i, n, err)
			break
		}
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			info, enc := s.codecs.EncodeChunk(dtype, buf)
			h.Chunks[i] = info
			name := s.chunkKey(hk, id, i)
			sealed := s.seal(name, enc)
			return s.op(gctx, func(ctx context.Context) error { return s.rdb.Set(ctx, name, sealed, ttl).Err() })
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if readErr != nil {
		return readErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.now()
	m := &meta{id: id, written: now.UnixNano(), key: key, header: h}
	if ttl > 0 {
		m.expires = now.Add(ttl).UnixNano()
	}
	raw, err := m.encode()
	if err != nil {
		return err
	}
	name := s.metaKey(hk)
	sealed := s.seal(name, raw)
	return s.op(ctx, func(ctx context.Context) error { return s.rdb.Set(ctx, name, sealed, ttl).Err() })
}

// Delete removes the entry under key (its meta; the chunks expire or are
// evicted).
func (s *Store) Delete(ctx context.Context, key string) error {
	name := s.metaKey(s.hash(key))
	return s.op(ctx, func(ctx context.Context) error { return s.rdb.Del(ctx, name).Err() })
}

// breaker is a consecutive-failure circuit breaker.
type breaker struct {
	limit    int
	cooldown time.Duration

	mu       sync.Mutex
	failures int
	openTill time.Time
	backoff  time.Duration
	probing  bool
}

// allow says whether an operation may go to Redis: always while closed;
// none while open; one probe at a time once the cool-down is over.
func (b *breaker) allow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failures < b.limit {
		return true
	}
	if time.Now().Before(b.openTill) || b.probing {
		return false
	}
	b.probing = true
	return true
}

func (b *breaker) abandon() {
	b.mu.Lock()
	b.probing = false
	b.mu.Unlock()
}

func (b *breaker) success() {
	b.mu.Lock()
	b.failures, b.backoff, b.probing = 0, 0, false
	b.mu.Unlock()
}

func (b *breaker) failure() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures++
	b.probing = false
	if b.failures >= b.limit {
		if b.backoff == 0 {
			b.backoff = b.cooldown
		} else {
			b.backoff = min(2*b.backoff, time.Minute)
		}
		b.openTill = time.Now().Add(b.backoff)
	}
}

// Down reports whether the breaker is open: Redis is taken to be down.
func (s *Store) Down() bool {
	s.br.mu.Lock()
	defer s.br.mu.Unlock()
	return s.br.failures >= s.br.limit
}
