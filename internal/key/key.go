// Package key spells the keys of cached entries, in L1 and in L2 (and any
// tier after them). It alone knows their encoding: the rest of modelcache
// builds keys from a Group and reads them back with Parse.
//
// Three kinds of entries are cached:
//
//	file tensor    "<path>\x00<size:mtime:ctime:dev:inode>\x00<tensor>"
//	digest tensor  "blake3:<hex>\x00content\x00<tensor>"
//	value          "\x00v\x00<namespace>\x00<epoch>\x00<key>"
//
// Paths are absolute and hold no NUL, digests start with "blake3:", and a
// value's key starts with NUL, so the three never meet. The first two are
// the spellings modelcache has always used, so directories written before
// this package keep their entries. The last part (tensor name, value key)
// may hold any byte, NUL included: it is everything after the third
// (for values, fourth) separator.
package key

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/loader"
)

// Kind is what an entry is.
type Kind uint8

// The kinds.
const (
	FileTensor   Kind = iota + 1 // a tensor of one version of a file
	DigestTensor                 // a tensor of a file's content
	Value                        // a value in one epoch of a namespace
)

func (k Kind) String() string {
	switch k {
	case FileTensor, DigestTensor:
		return "tensor"
	case Value:
		return "value"
	}
	return "unknown"
}

// Group is what the keys of entries that leave together share: the tensors
// of one version of a file, of one content, or the values of one epoch of a
// namespace.
type Group struct {
	Kind Kind
	// Head is the file's absolute path, "blake3:<hex>", or the namespace.
	Head string
	// Version is the file's version, DigestVersion, or the epoch.
	Version string
}

// DigestVersion is the version part of digest tensor keys.
const DigestVersion = "content"

// valueTag starts every value key.
const valueTag = "\x00v\x00"

// File is the group of the tensors of version id of a file.
func File(id loader.Identity) Group {
	return Group{Kind: FileTensor, Head: id.Path, Version: id.Version()}
}

// Digest is the group of the tensors of a content, digest being
// loader.Digest's spelling ("blake3:<hex>").
func Digest(digest string) Group {
	return Group{Kind: DigestTensor, Head: digest, Version: DigestVersion}
}

// Values is the group of the values of namespace ns at epoch.
func Values(ns string, epoch uint64) Group {
	return Group{Kind: Value, Head: ns, Version: strconv.FormatUint(epoch, 10)}
}

// Prefix is what every key of the group starts with.
func (g Group) Prefix() string { return HeadPrefix(g.Kind, g.Head) + g.Version + "\x00" }

// Key is the key of the entry called name in the group.
func (g Group) Key(name string) string { return g.Prefix() + name }

// Epoch is a value group's epoch.
func (g Group) Epoch() (uint64, bool) {
	if g.Kind != Value {
		return 0, false
	}
	e, err := strconv.ParseUint(g.Version, 10, 64)
	return e, err == nil
}

// HeadPrefix is what the keys of every group with this kind and head start
// with: every version of a file, every epoch of a namespace.
func HeadPrefix(kind Kind, head string) string {
	if kind == Value {
		return valueTag + head + "\x00"
	}
	return head + "\x00"
}

// AllValues is what every value key starts with.
const AllValues = valueTag

// Parse reads a key back into its group and name.
func Parse(s string) (g Group, name string, ok bool) {
	rest, isValue := strings.CutPrefix(s, valueTag)
	head, rest, ok1 := strings.Cut(rest, "\x00")
	version, name, ok2 := strings.Cut(rest, "\x00")
	if !ok1 || !ok2 || head == "" {
		return Group{}, "", false
	}
	switch {
	case isValue:
		if _, err := strconv.ParseUint(version, 10, 64); err != nil {
			return Group{}, "", false
		}
		g.Kind = Value
	case strings.HasPrefix(head, "blake3:"):
		if version != DigestVersion {
			return Group{}, "", false
		}
		g.Kind = DigestTensor
	default:
		g.Kind = FileTensor
	}
	g.Head, g.Version = head, version
	return g, name, true
}

// Identity is the identity string of a file tensor group's version
// (loader.Identity.String), "" for the other kinds.
func (g Group) Identity() string {
	if g.Kind != FileTensor {
		return ""
	}
	return g.Head + "\x00" + g.Version
}

// Owner returns the part of key s that names what owns it, without
// allocating: the file path (every version), the digest, or the tagged
// namespace (every epoch). L1 groups its entries by it, so that evicting a
// file or dropping a namespace visits only their entries. It is "" for a
// string that is not a key.
func Owner(s string) string {
	start := 0
	if strings.HasPrefix(s, valueTag) {
		start = len(valueTag)
	}
	i := strings.IndexByte(s[start:], 0)
	if i <= 0 {
		return ""
	}
	return s[:start+i]
}

// OwnerOf is Owner for every key with this kind and head.
func OwnerOf(kind Kind, head string) string {
	return strings.TrimSuffix(HeadPrefix(kind, head), "\x00")
}

// NamespaceOf is the namespace an Owner names, if it names one.
func NamespaceOf(owner string) (string, bool) {
	return strings.CutPrefix(owner, valueTag)
}

// Limits on the parts of value keys. Badger refuses keys over 65,000 bytes;
// these leave room for the tiers' own prefixes and keep L1's charge per key
// small.
const (
	MaxNamespace = 256
	MaxValueKey  = 4096
)

// CheckValue says whether ns and k can name a value: a namespace that
// CheckNamespace accepts and a key of at most MaxValueKey bytes (any bytes,
// empty included). The error wraps errs.ErrInvalidArgument.
func CheckValue(ns, k string) error {
	if err := CheckNamespace(ns); err != nil {
		return err
	}
	if len(k) > MaxValueKey {
		return fmt.Errorf("key: %w: key of %d bytes (at most %d)", errs.ErrInvalidArgument, len(k), MaxValueKey)
	}
	return nil
}

// CheckNamespace says whether ns can name a namespace: 1 to MaxNamespace
// bytes of valid UTF-8 without control characters (NUL, C0, DEL, C1). A
// namespace is a label value of the Prometheus metrics and a name in logs
// and JSON, where bytes that are not text make a scrape fail or a line lie.
// The error wraps errs.ErrInvalidArgument.
func CheckNamespace(ns string) error {
	switch {
	case ns == "":
		return fmt.Errorf("key: %w: empty namespace", errs.ErrInvalidArgument)
	case len(ns) > MaxNamespace:
		return fmt.Errorf("key: %w: namespace of %d bytes (at most %d)", errs.ErrInvalidArgument, len(ns), MaxNamespace)
	case strings.IndexByte(ns, 0) >= 0:
		return fmt.Errorf("key: %w: namespace %s holds a NUL byte", errs.ErrInvalidArgument, errs.Quote(ns))
	case !utf8.ValidString(ns):
		return fmt.Errorf("key: %w: namespace %s is not valid UTF-8", errs.ErrInvalidArgument, errs.Quote(ns))
	case strings.IndexFunc(ns, unicode.IsControl) >= 0:
		return fmt.Errorf("key: %w: namespace %s holds a control character", errs.ErrInvalidArgument, errs.Quote(ns))
	}
	return nil
}
