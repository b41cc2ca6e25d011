package l2

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/internal/third_party/badger"
	"github.com/modelcache/modelcache/internal/third_party/badger/y"
)

// Damage is what Open found damaged in the directory and what it cost.
type Damage struct {
	// Tables lists the tables that had unreadable blocks: they were rewritten
	// without them (or removed, if nothing could be read).
	Tables []badger.TableSalvage
	// SetAside is where the directory's files were moved when Badger's own
	// records (manifest, key registry) could not be read: the store started
	// empty. Empty if nothing was set aside.
	SetAside string
	// Reason is why the files were set aside.
	Reason string
	// RebuiltManifest, if not empty, is why Badger's manifest was rebuilt
	// from the tables in the directory.
	RebuiltManifest string
}

// LostBlocks is the number of table blocks lost (those of removed tables
// not counted).
func (d Damage) LostBlocks() int {
	n := 0
	for _, t := range d.Tables {
		n += t.LostBlocks
	}
	return n
}

const keyRegistryName = "KEYREGISTRY"

// repair makes a damaged directory openable before Badger sees it, at the
// cost of what the damage touched only:
//   - a manifest that cannot be read: rebuilt from the tables there; where
//     that fails (or the store encrypts), the directory's files are set
//     aside and the store starts empty (a cache can always be rebuilt);
//   - a key registry that cannot be read in a store that encrypts nothing:
//     it holds no key, and is removed for Badger to write anew;
//   - tables with unreadable blocks: rewritten without those blocks.
func repair(dir string, bo badger.Options, log *slog.Logger) (*Damage, error) {
	d := &Damage{}
	if reason := manifestDamage(dir, bo); reason != "" {
		n, err := badger.RebuildManifest(bo)
		if err != nil {
			return d, setAside(dir, reason+"; rebuilding it: "+err.Error(), d, log)
		}
		d.RebuiltManifest = reason
		log.Error("l2: unreadable manifest; rebuilt it from the tables", "dir", dir, "reason", reason, "tables", n)
	}
	if err := checkKeyRegistry(dir, bo, log); err != nil {
		return d, err
	}
	tables, err := badger.SalvageTables(bo, trustedTables(dir))
	if err != nil {
		// Not damage the salvage could cut out (a table's own damage is in
		// tables): a wrong key, a full disk, or a bug; nothing is touched.
		return d, fmt.Errorf("checking tables: %w", err)
	}
	d.Tables = tables
	for _, t := range tables {
		log.Error("l2: damaged table repaired: "+describeTable(t), "dir", dir)
	}
	return d, nil
}

// Lines says what was found damaged and what it cost, a line per finding,
// for reports (warm verify).
func (d Damage) Lines() []string {
	var out []string
	if d.SetAside != "" {
		out = append(out, fmt.Sprintf("the store's own records were unreadable (%s): its files were set aside in %s and it started empty", d.Reason, d.SetAside))
	}
	if d.RebuiltManifest != "" {
		out = append(out, fmt.Sprintf("Badger's manifest was unreadable (%s): it was rebuilt from the tables", d.RebuiltManifest))
	}
	for _, t := range d.Tables {
		out = append(out, describeTable(t))
	}
	return out
}

func describeTable(t badger.TableSalvage) string {
	name := fmt.Sprintf("table %06d.sst (level %d)", t.ID, t.Level)
	if t.Removed != nil {
		return fmt.Sprintf("%s could not be read at all (%v) and was removed: its entries are lost", name, t.Removed)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d of %d blocks unreadable and cut out, %d records kept", name, t.LostBlocks, t.Blocks, t.Kept)
	if t.IndexDamaged {
		b.WriteString(", index damaged and rebuilt")
	}
	for _, r := range t.Lost {
		fmt.Fprintf(&b, "; lost: the records after %s and before %s", describeKey(r.After, "the table's start"), describeKey(r.Before, "its end"))
	}
	b.WriteString(" (an entry whose meta record was lost is gone; one whose chunks were lost reads as damaged, and verify names and drops it)")
	return b.String()
}

// describeKey names a Badger key of the store for a report.
func describeKey(k []byte, none string) string {
	if len(k) == 0 {
		return none
	}
	k = y.ParseKey(k)
	if len(k) == 0 {
		return "an empty key"
	}
	switch k[0] {
	case metaPrefix:
		return "entry " + errs.Quote(string(k[1:]))
	case chunkPrefix:
		return "a chunk record"
	}
	return "an internal record"
}

// manifestDamage says why the manifest cannot be used, or "" if it can (or
// there is none yet).
func manifestDamage(dir string, bo badger.Options) string {
	f, err := os.Open(filepath.Join(dir, badger.ManifestFilename))
	if errors.Is(err, os.ErrNotExist) {
		return ""
	}
	if err != nil {
		return "" // unreadable for another reason: Badger reports it
	}
	defer f.Close()
	m, end, err := badger.ReplayManifestFile(f, bo.ExternalMagicVersion, bo.WithLogger(nil))
	if err != nil {
		return "manifest: " + err.Error()
	}
	// Badger takes a manifest that stops parsing early for a torn tail and
	// drops the tables it no longer lists: with a damaged length field, all
	// of them.
	if fi, err := f.Stat(); err == nil && end < fi.Size() {
		return fmt.Sprintf("manifest: unreadable after byte %d of %d", end, fi.Size())
	}
	for id := range m.Tables {
		if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("%06d.sst", id))); err != nil {
			return fmt.Sprintf("manifest: lists table %d, which is not there", id)
		}
	}
	return ""
}

// checkKeyRegistry removes a key registry that cannot be read when the store
// encrypts nothing: without a key it holds none, and Badger writes a new one.
// With a key, a registry that does not read is a wrong key as far as anyone
// can tell, and stays an error.
func checkKeyRegistry(dir string, bo badger.Options, log *slog.Logger) error {
	p := filepath.Join(dir, keyRegistryName)
	if _, err := os.Stat(p); err != nil || len(bo.EncryptionKey) > 0 {
		return nil
	}
	kr, err := badger.OpenKeyRegistry(badger.KeyRegistryOptions{Dir: dir, ReadOnly: true})
	if err == nil {
		kr.Close()
		return clearVlogKeyIDs(dir, log)
	}
	if encrypted, _ := usesEncryption(dir, bo); encrypted {
		return nil // written with a key: Open says the key is missing
	}
	log.Error("l2: unreadable key registry in an unencrypted store; writing a new one", "dir", dir, "err", err)
	return os.Remove(p)
}

// usesEncryption tells whether anything in dir was written with a data key:
// a table the manifest lists, a value-log or a memtable file.
func usesEncryption(dir string, bo badger.Options) (bool, error) {
	f, err := os.Open(filepath.Join(dir, badger.ManifestFilename))
	if err == nil {
		m, _, rerr := badger.ReplayManifestFile(f, bo.ExternalMagicVersion, bo.WithLogger(nil))
		f.Close()
		if rerr == nil {
			for _, t := range m.Tables {
				if t.KeyID != 0 {
					return true, nil
				}
			}
		}
	}
	vlogs, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil {
		return false, err
	}
	mems, err := filepath.Glob(filepath.Join(dir, "*.mem"))
	if err != nil {
		return false, err
	}
	for _, v := range append(vlogs, mems...) {
		// The first 8 bytes of a value-log or memtable file are its data
		// key's id.
		f, err := os.Open(v)
		if err != nil {
			continue
		}
		var id [8]byte
		_, err = io.ReadFull(f, id[:])
		f.Close()
		if err == nil && id != [8]byte{} {
			return true, nil
		}
	}
	return false, nil
}

// clearVlogKeyIDs zeroes the data-key id of value-log files in a store that
// encrypts nothing (its key registry reads without a key): a flipped bit
// there made Badger refuse the whole directory ("invalid data key id").
func clearVlogKeyIDs(dir string, log *slog.Logger) error {
	vlogs, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil {
		return err
	}
	for _, v := range vlogs {
		f, err := os.OpenFile(v, os.O_RDWR, 0)
		if err != nil {
			continue
		}
		var id [8]byte
		if _, err := io.ReadFull(f, id[:]); err == nil && id != [8]byte{} {
			log.Error("l2: value-log header names a data key in an unencrypted store; clearing it", "dir", dir, "file", filepath.Base(v))
			_, err = f.WriteAt(make([]byte, 8), 0)
			if err == nil {
				err = f.Sync()
			}
			if err != nil {
				f.Close()
				return err
			}
		}
		f.Close()
	}
	return nil
}

// environmental tells errors of the machine (a full or read-only disk,
// permissions, limits) from damage to the store.
func environmental(err error) bool {
	for _, e := range []error{syscall.ENOSPC, syscall.EROFS, syscall.EACCES, syscall.EPERM,
		syscall.EMFILE, syscall.ENFILE, syscall.ENOMEM, syscall.EDQUOT} {
		if errors.Is(err, e) || strings.Contains(err.Error(), e.Error()) {
			return true
		}
	}
	return errors.Is(err, badger.ErrEncryptionKeyMismatch) || errors.Is(err, badger.ErrInvalidEncryptionKey)
}

const setAsidePrefix = "damaged-"

// setAside moves every file of the store into a new folder damaged-TIME
// inside dir, so that the store starts empty, and says so in the log. An
// older such folder is removed: one is kept for a person to look at.
func setAside(dir, reason string, d *Damage, log *slog.Logger) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	to := filepath.Join(dir, setAsidePrefix+time.Now().UTC().Format("20060102T150405.000000000"))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), setAsidePrefix) && e.IsDir() {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := os.Mkdir(to, 0o755); err != nil {
		return err
	}
	for _, e := range entries {
		if e.Name() == lockName || strings.HasPrefix(e.Name(), setAsidePrefix) {
			continue
		}
		if err := os.Rename(filepath.Join(dir, e.Name()), filepath.Join(to, e.Name())); err != nil {
			return err
		}
	}
	d.SetAside, d.Reason = to, reason
	log.Error("l2: the store's records are damaged; its files were set aside and it starts empty",
		"dir", dir, "set_aside", to, "reason", reason)
	return nil
}
