package l3

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// LeaseTTL is how long a lease lives unless renewed; a holder renews it
// every LeaseTTL/3 while it holds it, so a holder that dies frees it within
// LeaseTTL.
const LeaseTTL = 10 * time.Second

var (
	renewScript   = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("pexpire", KEYS[1], ARGV[2]) else return 0 end`)
	releaseScript = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end`)
)

// Lease is the right, held by one machine of the fleet, to read the origin
// for one entry and write it to L3.
type Lease struct {
	s     *Store
	name  string
	token string
	stop  chan struct{}
	once  sync.Once
	done  sync.WaitGroup
}

// Lease tries to take the lease of key: ok false means another machine
// holds it (Await the entry). It is renewed in the background until
// Release.
func (s *Store) Lease(ctx context.Context, key string) (l *Lease, ok bool, err error) {
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		return nil, false, err
	}
	l = &Lease{s: s, name: s.leaseKey(s.hash(key)), token: hex.EncodeToString(tok), stop: make(chan struct{})}
	err = s.op(ctx, func(ctx context.Context) error {
		var err error
		ok, err = s.rdb.SetNX(ctx, l.name, l.token, LeaseTTL).Result()
		return err
	})
	if err != nil || !ok {
		return nil, false, err
	}
	l.done.Go(l.renew)
	return l, true, nil
}

func (l *Lease) renew() {
	t := time.NewTicker(LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			_ = l.s.op(context.Background(), func(ctx context.Context) error {
				return renewScript.Run(ctx, l.s.rdb, []string{l.name}, l.token, strconv.FormatInt(LeaseTTL.Milliseconds(), 10)).Err()
			})
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
			return releaseScript.Run(ctx, l.s.rdb, []string{l.name}, l.token).Err()
		})
	})
}

// Await waits until the entry under key is in L3 (true) or its lease is
// free, with no entry (false: the holder failed or died; take over), or ctx
// ends. It polls, every 10 ms at first and at most every 50 ms.
func (s *Store) Await(ctx context.Context, key string) (bool, error) {
	h := s.hash(key)
	meta, lease := s.metaKey(h), s.leaseKey(h)
	wait := 10 * time.Millisecond
	for {
		var n []int64
		err := s.op(ctx, func(ctx context.Context) error {
			// Two keys in different slots: two commands. The lease first: a
			// holder writes the meta before it lets the lease go, so a lease
			// found gone means a meta found now is there, and a meta still
			// missing means the holder failed. (Meta first, a holder that
			// wrote and released between the two looked like one that failed,
			// and its entry was read from the origin again.)
			l, err := s.rdb.Exists(ctx, lease).Result()
			if err != nil {
				return err
			}
			m, err := s.rdb.Exists(ctx, meta).Result()
			n = []int64{m, l}
			return err
		})
		switch {
		case err != nil:
			return false, err
		case n[0] == 1:
			return true, nil
		case n[1] == 0:
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// Epoch returns the fleet's epoch of namespace ns (0 if none was set).
func (s *Store) Epoch(ctx context.Context, ns string) (uint64, error) {
	var v uint64
	err := s.op(ctx, func(ctx context.Context) error {
		var err error
		v, err = s.rdb.Get(ctx, s.prefix+"e:"+ns).Uint64()
		if errors.Is(err, redis.Nil) {
			v, err = 0, nil
		}
		return err
	})
	return v, err
}

// RaiseEpoch makes the fleet's epoch of ns at least e and returns it.
func (s *Store) RaiseEpoch(ctx context.Context, ns string, e uint64) (uint64, error) {
	var v uint64
	err := s.op(ctx, func(ctx context.Context) error {
		var err error
		v, err = raiseScript.Run(ctx, s.rdb, []string{s.prefix + "e:" + ns}, strconv.FormatUint(e, 10)).Uint64()
		return err
	})
	return v, err
}

var raiseScript = redis.NewScript(`local v = tonumber(redis.call("get", KEYS[1]) or "0")
local e = tonumber(ARGV[1])
if e > v then redis.call("set", KEYS[1], ARGV[1]); return e end
return v`)
