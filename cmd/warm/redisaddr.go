package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/modelcache/modelcache/l3"
	"github.com/modelcache/modelcache/tier"
)

// parseRedis parses --redis: one redis:// or rediss:// URL as go-redis
// reads it (user, password, database; a cluster's further nodes as
// ?addr=HOST:PORT), or HOST:PORT, or the HOST:PORT of several nodes of a
// Redis Cluster, comma-separated. Anything else is a usage error: a
// fleet tier that cannot be reached must not pass for one that is down.
func parseRedis(s string) (*l3.Options, error) {
	bad := func(format string, a ...any) error {
		return usageError{fmt.Errorf("--redis: "+format, a...)}
	}
	s = strings.TrimSpace(s)
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			// url's message quotes the whole URL, password included.
			return nil, bad("not a URL (redis://[USER[:PASSWORD]@]HOST[:PORT][/DB])")
		}
		if u.Scheme != "redis" && u.Scheme != "rediss" {
			return nil, bad("scheme %q: want redis:// or rediss://", u.Scheme)
		}
		for k := range u.Query() {
			if k != "addr" {
				// go-redis would take it; l3 sets its own timeouts and pool.
				return nil, bad("URL parameter %q is not used by the fleet tier (only addr=HOST:PORT, a cluster's further nodes)", k)
			}
		}
		o := &l3.Options{TLS: u.Scheme == "rediss"}
		if u.Query().Has("addr") {
			co, err := redis.ParseClusterURL(s)
			if err != nil {
				return nil, bad("%s", redacted(err, u))
			}
			o.Addrs, o.Cluster, o.Username, o.Password = co.Addrs, true, co.Username, co.Password
		} else {
			ro, err := redis.ParseURL(s)
			if err != nil {
				return nil, bad("%s", redacted(err, u))
			}
			o.Addrs, o.Username, o.Password, o.DB = []string{ro.Addr}, ro.Username, ro.Password, ro.DB
		}
		for _, a := range o.Addrs {
			if err := checkHostPort(a); err != nil {
				return nil, bad("%v", err)
			}
		}
		return o, nil
	}
	o := &l3.Options{}
	for _, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		if err := checkHostPort(a); err != nil {
			return nil, bad("%v (want HOST:PORT[,HOST:PORT...] or a redis:// URL)", err)
		}
		o.Addrs = append(o.Addrs, a)
	}
	return o, nil
}

// redacted is a go-redis parse error without the URL's password.
func redacted(err error, u *url.URL) string {
	msg := err.Error()
	if p, ok := u.User.Password(); ok && p != "" {
		msg = strings.ReplaceAll(msg, p, "xxxxx")
	}
	return msg
}

// checkHostPort checks that a is HOST:PORT with a host and a port number.
func checkHostPort(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("%q is not HOST:PORT", a)
	}
	if host == "" || strings.ContainsAny(host, "/?#@ ") {
		return fmt.Errorf("%q: no host name", a)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number from 1 to 65535", a, port)
	}
	return nil
}

// l3State is one line saying whether the fleet tier answers.
func l3State(ctx context.Context, g *globals, c *tier.Cache) string {
	if g.redis == "" {
		return "l3: none (no --redis)"
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.CheckL3(ctx); err != nil {
		return fmt.Sprintf("l3: redis %s down: %v", redisShown(g.redis), err)
	}
	return fmt.Sprintf("l3: redis %s up", redisShown(g.redis))
}

// redisShown is --redis with any password in it hidden.
func redisShown(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		return u.Redacted()
	}
	return s
}
