package filedisk

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agent/replicate"
)

// How consistent a filedisk capture is depends on what holds the guest's
// writes while its disks are read; the label says which it was, never
// more:
//
//   - A freeze command (when an app-consistent point is asked for and the
//     agent has --freeze-command): the guest is quiesced. Its disks are
//     cloned and the guest resumed at once, or, without reflinks, read
//     while it stays quiesced and resumed right after the last read.
//     Label app.
//   - Reflinks (FICLONE, on XFS or btrfs): each disk is cloned, which is
//     atomic for that file. Several disks are one instant only if none but
//     the first changed while they were cloned, which their signatures
//     (size, inode, times) show; a busy VM is tried a few times. Label
//     crash, else inconsistent.
//   - Otherwise the disks are read where they are. If no disk changed from
//     before the read to after it (a VM that is off, or idle), what was
//     read is one instant: crash. Else inconsistent, with the read's start
//     and end.
//
// Signatures only prove that nothing changed when the file had been quiet
// for replica.QuietFor when first looked at: file times come from a
// coarse clock, and a write in flight may update them before its data
// lands.

// captureDirPrefix names the hidden directory, inside a VM's directory,
// that holds a capture's clones. Inventory ignores it; Recover removes
// what a crashed agent left.
const captureDirPrefix = ".lifeboat-capture-"

// reflinkTries is how often a multi-disk VM is cloned again when a disk
// changed during its clones.
const reflinkTries = 3

// Capture implements driver.Driver.
func (d *Driver) Capture(ctx context.Context, req driver.CaptureRequest) (driver.Capture, error) {
	dir, err := d.VMDir(req.VMID)
	if err != nil {
		return nil, err
	}
	c := &capture{d: d, vmID: req.VMID, dir: dir}
	for _, disk := range req.Disks {
		c.paths = append(c.paths, disk.Path)
		c.ids = append(c.ids, disk.ID)
	}
	if req.AppConsistent {
		switch {
		case !d.CanQuiesce():
			c.note = "an app-consistent point was asked for, but the agent has no --freeze-command"
			if _, said := d.warnedNoQuiesce.LoadOrStore(req.VMID, true); !said {
				d.logger().Warn("app-consistent points are asked for, but no --freeze-command is configured; this VM's points are not app-consistent", "vm", req.VMID)
			}
		default:
			thaw, err := d.freeze(ctx, req.VMID, dir)
			if err != nil {
				c.note = "the freeze command failed, so the point is not app-consistent: " + err.Error()
				d.logger().Warn("freeze failed; making the point without it", "vm", req.VMID, "error", err)
			} else {
				c.thaw, c.frozenAt = thaw, time.Now()
			}
		}
	}
	if err := c.take(ctx); err != nil {
		c.Release(false)
		return nil, err
	}
	return c, nil
}

// capture is one VM's disks, cloned or in place.
type capture struct {
	d        *Driver
	vmID     string
	dir      string
	paths    []string
	ids      []string
	note     string
	thaw     func() error // set while the guest is quiesced
	frozenAt time.Time

	files    []*os.File
	disks    []driver.CapturedDisk
	cloneDir string
	result   *driver.Result // settled at capture time (clones)

	// A read in place: the disks' signatures before it, and when.
	before        []*replica.SourceSignature
	lookedAt      time.Time
	runningBefore bool

	releaseOnce sync.Once
}

func (c *capture) Disks() []driver.CapturedDisk { return c.disks }

// take clones the disks where the filesystem can, else opens them in place.
func (c *capture) take(ctx context.Context) error {
	cloned, err := c.clone(ctx)
	if err != nil {
		return err
	}
	if cloned {
		return nil
	}
	c.runningBefore = c.running()
	c.lookedAt = time.Now()
	for i, path := range c.paths {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("source disk %s: %w", path, err)
		}
		c.files = append(c.files, f)
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		sig := replica.FileSignature(fi)
		c.before = append(c.before, sig)
		path := path
		c.disks = append(c.disks, driver.CapturedDisk{ID: c.ids[i], Source: replicate.Source{Name: path, Reader: f, Size: fi.Size(), Signature: sig,
			Unchanged: func() bool { return replica.FileUnchanged(path, sig, c.lookedAt) }}})
	}
	return nil
}

// clone tries to clone every disk with FICLONE. It reports false, with
// nothing left behind, where the filesystem has no reflinks.
func (c *capture) clone(ctx context.Context) (bool, error) {
	for try := 1; try <= reflinkTries; try++ {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		ok, oneInstant, err := c.cloneOnce()
		if err != nil || !ok {
			return false, err
		}
		if oneInstant || c.thaw != nil || try == reflinkTries {
			c.settleClones(oneInstant)
			return true, nil
		}
		c.removeClones()
		time.Sleep(100 * time.Millisecond)
	}
	return false, nil
}

// cloneOnce clones every disk into a fresh hidden directory. ok is false
// when the filesystem cannot clone (nothing is left behind then).
// oneInstant says no disk but the first changed while they were cloned.
func (c *capture) cloneOnce() (ok, oneInstant bool, err error) {
	nonce := make([]byte, 6)
	_, _ = rand.Read(nonce)
	c.cloneDir = filepath.Join(c.dir, captureDirPrefix+hex.EncodeToString(nonce))
	if err := os.Mkdir(c.cloneDir, 0o700); err != nil {
		return false, false, fmt.Errorf("capture directory: %w", err)
	}
	lookedAt := time.Now()
	sigs := make([]*replica.SourceSignature, len(c.paths))
	for i, path := range c.paths {
		if fi, err := os.Stat(path); err == nil {
			sigs[i] = replica.FileSignature(fi)
		}
	}
	oneInstant = true
	first := time.Now()
	for i, path := range c.paths {
		clone := filepath.Join(c.cloneDir, fmt.Sprintf("%d-%s", i, filepath.Base(path)))
		if err := cloneFile(clone, path); err != nil {
			c.removeClones()
			if i == 0 && noReflink(err) {
				if _, said := c.d.warnedNoReflink.LoadOrStore(c.dir, true); !said {
					c.d.logger().Info("the VM's disks are on a filesystem without reflinks: its points are crash-consistent only while it does not write",
						"vm", c.vmID, "reason", err.Error())
				}
				return false, false, nil
			}
			return false, false, fmt.Errorf("clone %s: %w", path, err)
		}
		f, err := os.Open(clone)
		if err != nil {
			c.removeClones()
			return false, false, err
		}
		c.files = append(c.files, f)
		fi, err := f.Stat()
		if err != nil {
			c.removeClones()
			return false, false, err
		}
		// The clone holds the disk as it was at the clone. Its signature
		// is the source's only if the source did not change between the
		// look and the clone.
		unchanged := false
		if after, err := os.Stat(path); err == nil && sigs[i] != nil {
			a := replica.FileSignature(after)
			unchanged = a != nil && *a == *sigs[i] && replica.Quiet(sigs[i], lookedAt)
		}
		if i > 0 && !unchanged {
			oneInstant = false
		}
		var sig *replica.SourceSignature
		if unchanged {
			sig = sigs[i]
		}
		c.disks = append(c.disks, driver.CapturedDisk{ID: c.ids[i], Source: replicate.Source{Name: path, Reader: f, Size: fi.Size(), Signature: sig,
			Unchanged: func() bool { return unchanged }}})
	}
	// One instant: the first clone's, for every disk was as then (none
	// changed until the last clone). Otherwise a span, from it to now.
	c.result = &driver.Result{Time: first, Method: driver.MethodReflink}
	if !oneInstant {
		c.result.Time, c.result.ReadStartedAt = time.Now(), &first
	}
	return true, oneInstant, nil
}

// settleClones labels a capture by clones, and resumes a quiesced guest
// at once: the clones hold what it needs.
func (c *capture) settleClones(oneInstant bool) {
	r := c.result
	switch {
	case c.thaw != nil:
		c.resume()
		r.Consistency, r.Method, r.ReadStartedAt = replica.ConsistencyApp, driver.MethodFreeze, nil
	case oneInstant:
		r.Consistency = replica.ConsistencyCrash
	default:
		r.Consistency = replica.ConsistencyInconsistent
		c.note = joinNote(c.note, fmt.Sprintf("the VM wrote to its disks while they were cloned, %d times in a row, so they are not of one instant; each disk is", reflinkTries))
	}
	r.Note = c.note
}

func (c *capture) resume() {
	if c.thaw == nil {
		return
	}
	if err := c.thaw(); err != nil {
		c.d.logger().Error("thaw failed: the VM may stay quiesced; check it", "vm", c.vmID, "error", err)
	}
	c.thaw = nil
}

// ReadDone implements driver.Capture.
func (c *capture) ReadDone() driver.Result {
	if c.result != nil {
		return *c.result
	}
	now := time.Now()
	if c.thaw != nil {
		c.resume()
		return driver.Result{Consistency: replica.ConsistencyApp, Time: c.frozenAt, Method: driver.MethodFreeze, Note: c.note}
	}
	unchanged := true
	for i, path := range c.paths {
		if !replica.FileUnchanged(path, c.before[i], c.lookedAt) {
			unchanged = false
		}
	}
	if unchanged {
		method := driver.MethodUnchanged
		if !c.runningBefore && !c.running() {
			method = driver.MethodPoweredOff
		}
		return driver.Result{Consistency: replica.ConsistencyCrash, Time: now, Method: method, Note: c.note}
	}
	started := c.lookedAt
	return driver.Result{Consistency: replica.ConsistencyInconsistent, Time: now, ReadStartedAt: &started, Method: driver.MethodLive,
		Note: joinNote(c.note, "the disks were read while the VM wrote to them, with nothing to hold its writes")}
}

// Release implements driver.Capture. filedisk tracks no changes, so ack
// changes nothing but the clean-up.
func (c *capture) Release(bool) error {
	var err error
	c.releaseOnce.Do(func() {
		c.resume()
		for _, f := range c.files {
			f.Close()
		}
		c.files = nil
		err = c.removeClones()
	})
	return err
}

func (c *capture) removeClones() error {
	for _, f := range c.files {
		f.Close()
	}
	c.files, c.disks = nil, nil
	if c.cloneDir == "" {
		return nil
	}
	err := os.RemoveAll(c.cloneDir)
	c.cloneDir = ""
	return err
}

func (c *capture) running() bool {
	_, err := os.Stat(filepath.Join(c.dir, runningMarker))
	return err == nil
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// cloneFile makes dst a reflink clone of src: no data is copied, and the
// clone is atomic with respect to writes to src.
func cloneFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = unix.IoctlFileClone(int(out.Fd()), int(in.Fd()))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// noReflink reports whether a clone failed because the filesystem (or the
// pair of files) cannot share extents, rather than for a fault.
func noReflink(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EXDEV) ||
		errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS)
}

// Recover removes the clones of captures an agent did not release (it
// stopped mid-capture), and the hidden directories of materializations
// and removals it did not finish.
func (d *Driver) Recover(context.Context) error {
	entries, err := os.ReadDir(d.Root)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if strings.HasPrefix(e.Name(), materializePrefix) || strings.HasPrefix(e.Name(), removePrefix) {
			errs = append(errs, os.RemoveAll(filepath.Join(d.Root, e.Name())))
			continue
		}
		inner, err := os.ReadDir(filepath.Join(d.Root, e.Name()))
		if err != nil {
			continue
		}
		for _, in := range inner {
			if in.IsDir() && strings.HasPrefix(in.Name(), captureDirPrefix) {
				errs = append(errs, os.RemoveAll(filepath.Join(d.Root, e.Name(), in.Name())))
			}
		}
	}
	return errors.Join(errs...)
}
