package l3

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/modelcache/modelcache/errs"
)

// leaseTTL is the default lease period (Options.LeasePeriod): how long a
// lease lives unless renewed. A holder renews it every third of a period
// while it holds it, so a holder that dies frees it within one period.
const leaseTTL = 10 * time.Second

var (
	// A renewal whose reply was lost may have replaced the value: the
	// holder's value is either of two (ARGV[1], ARGV[2]).
	renewScript = redis.NewScript(`local v = redis.call("get", KEYS[1])
if v == ARGV[1] or v == ARGV[2] then return redis.call("set", KEYS[1], ARGV[2], "PX", ARGV[3]) else return 0 end`)
	releaseLeaseScript = redis.NewScript(`local v = redis.call("get", KEYS[1])
if v == ARGV[1] or v == ARGV[2] then return redis.call("del", KEYS[1]) else return 0 end`)
	releaseScript = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end`)
)

// Lease is the right, held by one machine of the fleet, to read the origin
// for one entry and write it to L3.
type Lease struct {
	s     *Store
	name  string
	token []byte
	// value is the lease's value as stored, tried the value of a renewal
	// that may or may not have been made; only renew changes them, and
	// Release reads them once renew is done.
	value, tried string
	stop         chan struct{}
	once         sync.Once
	done         sync.WaitGroup
}

// A lease's value is its holder's random token; with a fleet key, the token
// and the time until which the holder vouches for it (its last renewal plus
// one period), sealed, so that no client without the key can hold a lease,
// nor hold one with a copy of an old value for longer than a period.
const leaseTokenLen = 16

func (s *Store) leaseValue(name string, token []byte) string {
	if s.aead == nil {
		return hex.EncodeToString(token)
	}
	b := binary.LittleEndian.AppendUint64(bytes.Clone(token), uint64(s.now().Add(s.period).UnixNano()))
	return string(s.seal(name, b))
}

// checkLease says why the lease under name, with value v and pttl left,
// cannot be a holder's (nil if it can be): a holder sets it with a TTL of
// one period at most, renews it before it runs out, and, with a fleet key,
// seals it with its deadline.
func (s *Store) checkLease(name string, v []byte, pttl time.Duration) error {
	bad := func(why string) error { return fmt.Errorf("l3: %w: lease %s %s", errs.ErrCorrupt, name, why) }
	switch {
	case pttl < 0:
		return bad("has no TTL")
	case pttl > s.period:
		return bad(fmt.Sprintf("has a TTL of %v, longer than the %v lease period", pttl, s.period))
	case s.aead == nil:
		return nil
	}
	plain, err := s.unseal(name, v)
	if err != nil || len(plain) != leaseTokenLen+8 {
		return bad("does not authenticate with the fleet key")
	}
	deadline := time.Unix(0, int64(binary.LittleEndian.Uint64(plain[leaseTokenLen:])))
	// A holder's clock may be ahead of this one: a deadline up to a period
	// further is the holder's; past it, the value was not renewed.
	if now := s.now(); now.After(deadline) || deadline.Sub(now) > 2*s.period {
		return bad(fmt.Sprintf("was not renewed in a lease period (vouched for until %s)", deadline.UTC().Format(time.RFC3339)))
	}
	return nil
}

// Lease tries to take the lease of key: ok false means another machine
// holds it (Await the entry). It is renewed in the background until
// Release.
func (s *Store) Lease(ctx context.Context, key string) (l *Lease, ok bool, err error) {
	tok := make([]byte, leaseTokenLen)
	if _, err := rand.Read(tok); err != nil {
		return nil, false, err
	}
	l = &Lease{s: s, name: s.leaseKey(s.hash(key)), token: tok, stop: make(chan struct{})}
	l.value = s.leaseValue(l.name, tok)
	err = s.op(ctx, func(ctx context.Context) error {
		var err error
		ok, err = s.rdb.SetNX(ctx, l.name, l.value, s.period).Result()
		return err
	})
	if err != nil || !ok {
		return nil, false, err
	}
	l.done.Go(l.renew)
	return l, true, nil
}

func (l *Lease) renew() {
	t := time.NewTicker(l.s.period / 3)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			if l.tried == "" {
				l.tried = l.s.leaseValue(l.name, l.token)
			}
			err := l.s.op(context.Background(), func(ctx context.Context) error {
				return renewScript.Run(ctx, l.s.rdb, []string{l.name}, l.value, l.tried, strconv.FormatInt(l.s.period.Milliseconds(), 10)).Err()
			})
			if err == nil {
				l.value, l.tried = l.tried, ""
			}
		}
	}
}

// Release gives the lease up (if it is still this holder's). It is safe to
// call twice.
func (l *Lease) Release() {
	l.once.Do(func() {
		close(l.stop)
		l.done.Wait()
		_ = l.s.op(context.Background(), func(ctx context.Context) error {
			return releaseLeaseScript.Run(ctx, l.s.rdb, []string{l.name}, l.value, l.tried).Err()
		})
	})
}

// Await waits until the entry under key is in L3 (true) or its lease is
// free, with no entry (false: the holder failed or died; take over), or ctx
// ends. It polls, every 10 ms at first and at most every 50 ms. A lease no
// holder can have set (no TTL, a TTL past one period, or, with a fleet key,
// a value that does not authenticate or was not renewed in a period) is
// deleted, and Await returns false with an error wrapping errs.ErrCorrupt
// that says why: take over.
func (s *Store) Await(ctx context.Context, key string) (bool, error) {
	h := s.hash(key)
	meta, lease := s.metaKey(h), s.leaseKey(h)
	wait := 10 * time.Millisecond
	for {
		var exists bool
		var held []byte
		var pttl time.Duration
		err := s.op(ctx, func(ctx context.Context) error {
			// Two keys in different slots: separate commands. The lease
			// first: a holder writes the meta before it lets the lease go,
			// so a lease found gone means a meta found now is there, and a
			// meta still missing means the holder failed. (Meta first, a
			// holder that wrote and released between the two looked like
			// one that failed, and its entry was read from the origin
			// again.) The value is read no longer than a holder's.
			var err error
			if held, err = s.rdb.GetRange(ctx, lease, 0, int64(s.sealedLen(max(2*leaseTokenLen, leaseTokenLen+8)))).Bytes(); err != nil {
				return err
			}
			if pttl, err = s.rdb.PTTL(ctx, lease).Result(); err != nil {
				return err
			}
			m, err := s.rdb.Exists(ctx, meta).Result()
			exists = m == 1
			return err
		})
		switch {
		case err != nil:
			return false, err
		case exists:
			return true, nil
		case len(held) == 0 || pttl == -2:
			return false, nil
		}
		if err := s.checkLease(lease, held, pttl); err != nil {
			_ = s.op(ctx, func(ctx context.Context) error {
				return releaseScript.Run(ctx, s.rdb, []string{lease}, held).Err()
			})
			return false, err
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// Epoch returns the fleet's epoch of namespace ns (0 if none was set). A
// malformed record (not a number, or, with a fleet key, one that does not
// authenticate) is an error wrapping errs.ErrCorrupt, which says nothing of
// Redis's health.
func (s *Store) Epoch(ctx context.Context, ns string) (uint64, error) {
	v, _, _, err := s.readEpoch(ctx, s.epochKey(ns))
	return v, err
}

func (s *Store) epochKey(ns string) string { return s.prefix + "e:" + ns }

// maxEpoch is the largest epoch a record may hold: a larger one is
// malformed (errs.ErrCorrupt), and replaced at the next drop.
const maxEpoch = 1 << 62

// maxEpochLen bounds a stored epoch: 20 digits, sealed.
const maxEpochLen = 20

// readEpoch reads the epoch record under name: its value, the record as
// stored (to replace it), and whether there is one.
func (s *Store) readEpoch(ctx context.Context, name string) (v uint64, raw []byte, found bool, err error) {
	raw, err = s.getBounded(ctx, name, int64(s.sealedLen(maxEpochLen)))
	if errors.Is(err, redis.Nil) {
		return 0, nil, false, nil
	}
	if err != nil {
		return 0, nil, true, err
	}
	v, err = s.decodeEpoch(name, raw)
	return v, raw, true, err
}

func (s *Store) decodeEpoch(name string, raw []byte) (uint64, error) {
	plain, err := s.unseal(name, raw)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(string(plain), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("l3: %w: epoch %s is not a number", errs.ErrCorrupt, name)
	}
	if v > maxEpoch {
		// No fleet drops a namespace 2^62 times: a forged one, which would
		// leave the next drop nowhere to go (its +1 wraps to 0).
		return 0, fmt.Errorf("l3: %w: epoch %s is beyond %d", errs.ErrCorrupt, name, uint64(maxEpoch))
	}
	return v, nil
}

func (s *Store) encodeEpoch(name string, e uint64) []byte {
	return s.seal(name, []byte(strconv.FormatUint(e, 10)))
}

// RaiseEpoch makes the fleet's epoch of ns at least e and returns it. A
// malformed record is replaced.
func (s *Store) RaiseEpoch(ctx context.Context, ns string, e uint64) (uint64, error) {
	name := s.epochKey(ns)
	for range 64 {
		cur, raw, found, err := s.readEpoch(ctx, name)
		if err != nil && !errors.Is(err, errs.ErrCorrupt) {
			return 0, err
		}
		if err == nil && cur >= e {
			return cur, nil
		}
		mode, was := "0", string(raw) // replace the record if it is still raw
		switch {
		case !found:
			mode = "1" // if there is still none
		case raw == nil:
			// Too long to have been read: if it is still too long.
			mode, was = "2", strconv.Itoa(s.sealedLen(maxEpochLen))
		}
		var swapped int64
		err = s.op(ctx, func(ctx context.Context) error {
			var err error
			swapped, err = raiseScript.Run(ctx, s.rdb, []string{name}, mode, was, s.encodeEpoch(name, e)).Int64()
			return err
		})
		if err != nil {
			return 0, err
		}
		if swapped == 1 {
			return e, nil
		}
		// Another machine raised it meanwhile: look again.
		if err := ctx.Err(); err != nil {
			return 0, err
		}
	}
	return 0, fmt.Errorf("l3: %w: epoch %s changed at every one of 64 tries", ErrUnavailable, name)
}

// raiseScript replaces the record under KEYS[1] with ARGV[3] if it is
// still ARGV[2] (ARGV[1] "0"), still absent ("1"), or still longer than
// ARGV[2] bytes ("2"): the comparison of epochs is the client's, which
// alone can unseal them.
var raiseScript = redis.NewScript(`local v = redis.call("get", KEYS[1])
if (ARGV[1] == "1" and not v) or (ARGV[1] == "0" and v == ARGV[2]) or (ARGV[1] == "2" and v and string.len(v) > tonumber(ARGV[2])) then
	redis.call("set", KEYS[1], ARGV[3]); return 1
end
return 0`)
