package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/modelcache/modelcache/client"
	"github.com/modelcache/modelcache/l1"
	"github.com/modelcache/modelcache/l2"
	"github.com/modelcache/modelcache/l3"
	"github.com/modelcache/modelcache/resolve"
	"github.com/modelcache/modelcache/tier"
)

// globals are the options every subcommand shares.
type globals struct {
	dir     string
	memory  string
	policy  string
	disk    string
	ttl     time.Duration
	keyFile string
	digest  bool
	// sourceRate limits reads of model files (bytes a second), to measure
	// the cache against a slow origin.
	sourceRate string
	// optionalL2: a cache directory that cannot be used is a warning, and
	// reads go to the model files (warm get).
	optionalL2 bool
	// The fleet tier: Redis addresses, ACL user, and files holding the
	// password, the CA bundle and the fleet key (never secrets on the
	// command line).
	redis, redisUser, redisPasswordFile, redisCA, fleetKeyFile string
	// server is a warm serve daemon to talk to (get, load, stats).
	server   string
	redisTLS bool
	// command is the command line's command ("warm gc"), for messages;
	// serverGiven: --server was on its command line.
	command     string
	serverGiven bool
	stdout      io.Writer
	stderr      io.Writer
}

func defaultDir() string {
	if d := os.Getenv("MODELCACHE_DIR"); d != "" {
		return d
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	return filepath.Join(base, "modelcache")
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func parseSize(flag, s string) (int64, error) {
	if s == "" || s == "0" {
		return 0, nil
	}
	n, err := humanize.ParseBytes(s)
	if err != nil || n > 1<<62 {
		return 0, usageError{fmt.Errorf("--%s: %q is not a size (e.g. 512MiB, 20GB)", flag, s)}
	}
	return int64(n), nil
}

// open opens the cache with the shared options.
func (g *globals) open() (*tier.Cache, error) {
	mem, err := parseSize("memory", g.memory)
	if err != nil {
		return nil, err
	}
	if mem == 0 && g.memory != "" {
		// --disk 0 means no limit; RAM without a limit is no setting at all.
		return nil, usageError{fmt.Errorf("--memory: 0 is not a RAM budget; leave it out for the default %s", humanize.IBytes(tier.DefaultMemoryBytes))}
	}
	return g.openAt(g.dir, mem)
}

// openAt opens the cache in dir with an L1 of mem bytes (0: the default)
// and the other shared options.
func (g *globals) openAt(dir string, mem int64) (*tier.Cache, error) {
	disk, err := parseSize("disk", g.disk)
	if err != nil {
		return nil, err
	}
	if disk != 0 && disk < l2.MinBytes {
		return nil, usageError{fmt.Errorf("--disk: %s is below the minimum of %s (0 for no limit)", g.disk, humanize.IBytes(l2.MinBytes))}
	}
	if g.ttl < 0 {
		return nil, usageError{fmt.Errorf("--ttl: %v is negative (0 for no expiry)", g.ttl)}
	}
	if !slices.Contains(l1.Policies, l1.Policy(g.policy)) {
		return nil, usageError{fmt.Errorf("--memory-policy: %q is not one of %v", g.policy, l1.Policies)}
	}
	var key []byte
	if g.keyFile != "" {
		if key, err = readKey(g.keyFile); err != nil {
			return nil, err
		}
	}
	rate, err := parseSize("source-rate", g.sourceRate)
	if err != nil {
		return nil, err
	}
	var origin tier.Origin = tier.LocalFiles{}
	if rate > 0 {
		origin = tier.Throttle(origin, rate)
	}
	logger := slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	fleet, err := g.l3Options()
	if err != nil {
		return nil, err
	}
	return tier.Open(&tier.Options{Dir: dir, MemoryBytes: mem, MemoryPolicy: l1.Policy(g.policy), DiskBytes: disk,
		TTL: g.ttl, EncryptionKey: key, ContentDigest: g.digest, L2Optional: g.optionalL2, Logger: logger,
		Origin: origin, L3: fleet})
}

// l3Options is the fleet tier the flags name, or nil.
func (g *globals) l3Options() (*l3.Options, error) {
	if g.redis == "" {
		return nil, nil
	}
	o, err := parseRedis(g.redis)
	if err != nil {
		return nil, err
	}
	if g.redisUser != "" {
		if o.Username != "" && o.Username != g.redisUser {
			return nil, usageError{fmt.Errorf("--redis-user %q and the user %q of the --redis URL differ", g.redisUser, o.Username)}
		}
		o.Username = g.redisUser
	}
	if g.redisPasswordFile != "" {
		if o.Password != "" {
			return nil, usageError{fmt.Errorf("--redis-password-file and a password in the --redis URL: give one")}
		}
		o.PasswordFile = g.redisPasswordFile
	}
	o.TLS, o.TLSCAFile = o.TLS || g.redisTLS, g.redisCA
	if g.fleetKeyFile != "" {
		k, err := readKey(g.fleetKeyFile)
		if err != nil {
			return nil, fmt.Errorf("--fleet-key-file: %w", err)
		}
		o.FleetKey = k
	}
	return o, nil
}

// withCache opens the cache, runs fn and closes the cache. A failed Close
// (queued writes lost) is reported when fn itself succeeded.
func (g *globals) withCache(fn func(c *tier.Cache) error) error {
	if g.serverGiven {
		fmt.Fprintf(g.stderr, "warm: %s works on the cache directory itself, not through a daemon: --server is not used\n", g.command)
	}
	c, err := g.open()
	if err != nil {
		return g.lockedHint(err, false)
	}
	err = fn(c)
	if cerr := c.Close(); err == nil {
		err = cerr
	}
	return err
}

// readKey reads an AES key: 16, 24 or 32 raw bytes, or twice as many hex
// digits (a trailing newline is ignored).
func readKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("encryption key: %w", err)
	}
	if t := strings.TrimSpace(string(b)); len(t) == 32 || len(t) == 48 || len(t) == 64 {
		if k, err := hex.DecodeString(t); err == nil {
			return k, nil
		}
	}
	switch len(b) {
	case 16, 24, 32:
		return b, nil
	}
	return nil, fmt.Errorf("encryption key %s: want 16, 24 or 32 bytes, raw or in hex", path)
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	w := &warmFlags{}
	root := &cobra.Command{
		Use:   "warm [flags] FILE...",
		Short: "Pre-populate and inspect a modelcache directory",
		Long: `warm caches every tensor of the given models in the modelcache directory,
so that services reading them through modelcache start from local,
compressed, checksummed copies. A model is a safetensors, GGUF (v2, v3),
.npy or .npz file, a sharded safetensors checkpoint (its directory or its
model.safetensors.index.json), or any other file named on the command line,
cached whole as one entry named "-" (tokenizers, configs, raw inputs).
Directories are searched for .safetensors, .gguf, .npy and .npz files and
sharded checkpoints. Tensors already cached are skipped, so an interrupted
run (Ctrl-C stops cleanly) resumes where it stopped. On a terminal a progress
bar shows bytes, rate and time left.

Exit status: 0 on success, 1 if any file failed, 2 on a usage error,
130 if interrupted.`,
		Example: `  warm model.safetensors
  warm --dir /var/cache/modelcache llama-3-8b-q4_k_m.gguf
  warm /models/Llama-3-8B/               # a sharded checkpoint, validated whole
  warm inputs.npz tokenizer.json         # arrays, and a plain file
  warm --jobs 4 /models/                 # every model under /models
  warm --json model.safetensors | jq .logical_bytes
  MODELCACHE_DIR=/data/mc warm model.safetensors`,
		Args:          cobra.MinimumNArgs(1),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			// "warm lod M": a typo of a command, not a file to warm.
			if len(args) > 0 && !resolve.IsName(args[0]) {
				if _, err := os.Lstat(args[0]); errors.Is(err, fs.ErrNotExist) {
					if s := closest(args[0], cmd.SuggestionsFor(args[0])); len(s) > 0 {
						return usageError{fmt.Errorf("unknown command %q; did you mean %s?", args[0], strings.Join(s, " or "))}
					}
				}
			}
			if w.jobs < 1 {
				return usageError{fmt.Errorf("--jobs must be at least 1, got %d", w.jobs)}
			}
			return g.warmFiles(cmd.Context(), args, w)
		},
	}
	root.SuggestionsMinimumDistance = 2 // edits from a typo to a command ("lod": load)
	root.Flags().IntVarP(&w.jobs, "jobs", "j", 2, "files warmed at once")
	root.Flags().BoolVar(&w.json, "json", false, "print a JSON summary instead of text")
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&g.dir, "dir", defaultDir(), "cache directory (env MODELCACHE_DIR)")
	pf.StringVar(&g.memory, "memory", envOr("MODELCACHE_MEMORY", ""), "RAM budget of the in-memory tier, e.g. 2GiB (env MODELCACHE_MEMORY; default 1GiB)")
	pf.StringVar(&g.policy, "memory-policy", envOr("MODELCACHE_MEMORY_POLICY", string(l1.TinyLFU)), "eviction policy of the in-memory tier: tinylfu, s3fifo, lru, fifo, lfu or gdsf (env MODELCACHE_MEMORY_POLICY)")
	pf.StringVar(&g.disk, "disk", envOr("MODELCACHE_DISK", ""), "disk budget of the cache directory, e.g. 100GB; 0 for none (env MODELCACHE_DISK)")
	pf.BoolVar(&g.digest, "content-digest", os.Getenv("MODELCACHE_CONTENT_DIGEST") == "1", "key tensors by a BLAKE3 digest of the file's content, so copies at other paths share entries; chosen when the directory is created, which keeps that mode (env MODELCACHE_CONTENT_DIGEST=1)")
	ttl, ttlErr := time.ParseDuration(envOr("MODELCACHE_TTL", "0s"))
	pf.DurationVar(&g.ttl, "ttl", ttl, "how long cached entries live, e.g. 72h; 0 for until evicted (env MODELCACHE_TTL)")
	pf.StringVar(&g.keyFile, "encryption-key-file", envOr("MODELCACHE_ENCRYPTION_KEY_FILE", ""), "file holding an AES key (16, 24 or 32 bytes, raw or hex) to encrypt the cache at rest (env MODELCACHE_ENCRYPTION_KEY_FILE)")
	pf.StringVar(&g.redis, "redis", envOr("MODELCACHE_REDIS", ""), "the fleet tier: Redis HOST:PORT, several nodes of a Redis Cluster comma-separated, or a redis:// or rediss:// URL ([USER[:PASSWORD]@]HOST[:PORT][/DB], ?addr=HOST:PORT for a cluster's further nodes) (env MODELCACHE_REDIS)")
	pf.StringVar(&g.redisUser, "redis-user", envOr("MODELCACHE_REDIS_USER", ""), "Redis ACL user (env MODELCACHE_REDIS_USER)")
	pf.StringVar(&g.redisPasswordFile, "redis-password-file", envOr("MODELCACHE_REDIS_PASSWORD_FILE", ""), "file holding the Redis password (env MODELCACHE_REDIS_PASSWORD_FILE)")
	pf.BoolVar(&g.redisTLS, "redis-tls", os.Getenv("MODELCACHE_REDIS_TLS") == "1", "connect to Redis with TLS (env MODELCACHE_REDIS_TLS=1; implied by --redis-tls-ca)")
	pf.StringVar(&g.redisCA, "redis-tls-ca", envOr("MODELCACHE_REDIS_TLS_CA", ""), "CA bundle (PEM) that signed the Redis servers' certificates; implies TLS (env MODELCACHE_REDIS_TLS_CA)")
	pf.StringVar(&g.fleetKeyFile, "fleet-key-file", envOr("MODELCACHE_FLEET_KEY_FILE", ""), "file holding the fleet key (16, 24 or 32 bytes, raw or hex): L3 entries are sealed with AES-GCM (env MODELCACHE_FLEET_KEY_FILE)")
	pf.StringVar(&g.server, "server", envOr("MODELCACHE_SERVER", ""), "talk to this warm serve daemon (its unix socket, or http://host:port) for get, load and stats; read the files directly, with a warning, when it does not answer (env MODELCACHE_SERVER)")
	pf.StringVar(&g.sourceRate, "source-rate", envOr("MODELCACHE_SOURCE_RATE", ""), "limit reads of model files to this many bytes a second, e.g. 200MB, to measure the cache against a slow origin (env MODELCACHE_SOURCE_RATE)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		g.command = cmd.CommandPath()
		if f := cmd.Flag("server"); f != nil {
			g.serverGiven = f.Changed
		}
		if ttlErr != nil {
			return usageError{fmt.Errorf("MODELCACHE_TTL: %v", ttlErr)}
		}
		// --redis is checked before anything runs, by every command: a
		// malformed address is no fleet tier, and must not look like one
		// that is down.
		if g.redis != "" {
			if _, err := parseRedis(g.redis); err != nil {
				return err
			}
		}
		return nil
	}
	wrapArgs(root)
	root.AddCommand(newGetCmd(g), newStatsCmd(g), newVerifyCmd(g), newGCCmd(g), newEvictCmd(g), newBenchCmd(g), newLsCmd(g), newTensorsCmd(g), newSimCmd(g), newLoadCmd(g), newValueCmd(g), newServeCmd(g))
	for _, c := range root.Commands() {
		wrapArgs(c)
	}
	return root
}

// wrapArgs makes argument-count errors usage errors, in c and in its
// subcommands.
func wrapArgs(c *cobra.Command) {
	for _, sub := range c.Commands() {
		wrapArgs(sub)
	}
	if c.Args == nil {
		return
	}
	check := c.Args
	c.Args = func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

// daemon dials the warm serve named by --server or $MODELCACHE_SERVER; nil
// when none is named, or (with a warning) when it does not answer, and the
// command then opens the directory itself (openOrDaemon).
func (g *globals) daemon() *client.Client {
	if g.server == "" {
		return nil
	}
	c, err := client.DialToken(g.server, os.Getenv("MODELCACHE_SERVER_TOKEN"))
	if err != nil {
		fmt.Fprintf(g.stderr, "warm: %v; reading the files directly\n", err)
		return nil
	}
	return c
}

// closest are the names among suggestions nearest to typed (by edit
// distance), quoted.
func closest(typed string, suggestions []string) []string {
	var out []string
	best := -1
	for _, s := range suggestions {
		d := editDistance(strings.ToLower(typed), strings.ToLower(s))
		switch {
		case best < 0 || d < best:
			best, out = d, []string{strconv.Quote(s)}
		case d == best:
			out = append(out, strconv.Quote(s))
		}
	}
	return out
}

// editDistance is the Levenshtein distance of a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
