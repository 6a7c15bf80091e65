package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/blocks"
	"github.com/lifeboat-dr/lifeboat/agent/qmp"
)

// Change tracking keeps one dirty bitmap per disk recording the guest's
// writes since the last acknowledged capture: the live bitmap, named
// BitmapPrefix followed by a generation number (the time it was made).
//
// A capture hands it over (Freeze): in one QMP transaction, for every disk
// of the VM, the live bitmap is disabled (it is frozen: the writes from the
// last acknowledged capture to this instant) and a new live bitmap is
// added, which records every write after it. The frozen bitmaps' extents
// are what the capture must send. Release(true) drops them; Release(false)
// merges each new live bitmap into the frozen one, which records again,
// and drops the new one, in one transaction, so the next capture still
// sends both: no write is lost either way. A live bitmap's name is thus
// always the Token of the acknowledged capture its changes count from.
//
// Bitmaps are persistent on qcow2 (they survive a restart of QEMU and of
// the agent) and granular to BitmapGranularity. Raw images cannot store
// bitmaps: theirs live in QEMU's memory, and after a restart of QEMU the
// disk has none, so its changes are unknown (a checksum resync follows).
// A persistent bitmap that QEMU could not save (QEMU killed) comes back
// marked inconsistent; it is dropped, and the changes are unknown too.

// BitmapPrefix starts the names of the bitmaps Lifeboat makes. Others'
// bitmaps (a backup tool's) are left alone.
const BitmapPrefix = "lifeboat-"

// BitmapGranularity is the size of the disk area one bit of a bitmap
// covers: a write anywhere in it marks the whole area changed.
const BitmapGranularity = 64 << 10

type bitmapInfo struct {
	Name         string `json:"name"`
	Recording    bool   `json:"recording"`
	Persistent   bool   `json:"persistent"`
	Busy         bool   `json:"busy"`
	Inconsistent bool   `json:"inconsistent"`
	Granularity  int64  `json:"granularity"`
	Count        int64  `json:"count"`
}

type nodeInfo struct {
	NodeName     string       `json:"node-name"`
	DirtyBitmaps []bitmapInfo `json:"dirty-bitmaps"`
}

// bitmaps lists the bitmaps of every named node.
func bitmaps(ctx context.Context, m *qmp.Monitor) (map[string][]bitmapInfo, error) {
	var nodes []nodeInfo
	if err := m.Execute(ctx, "query-named-block-nodes", map[string]any{"flat": true}, &nodes); err != nil {
		return nil, err
	}
	out := map[string][]bitmapInfo{}
	for _, n := range nodes {
		out[n.NodeName] = append(out[n.NodeName], n.DirtyBitmaps...)
	}
	return out, nil
}

// ours splits a node's Lifeboat bitmaps into the live one (recording,
// consistent; the newest if there are several) and the rest.
func ours(list []bitmapInfo) (live *bitmapInfo, frozen, broken []bitmapInfo) {
	for i := range list {
		b := list[i]
		if !strings.HasPrefix(b.Name, BitmapPrefix) {
			continue
		}
		switch {
		case b.Inconsistent:
			broken = append(broken, b)
		case b.Recording:
			if live != nil && live.Name > b.Name {
				frozen = append(frozen, b)
				continue
			}
			if live != nil {
				frozen = append(frozen, *live)
			}
			live = &list[i]
		default:
			frozen = append(frozen, b)
		}
	}
	return live, frozen, broken
}

var genMu sync.Mutex
var lastGen int64

// newBitmapName makes a bitmap name that sorts after every earlier one.
func newBitmapName() string {
	genMu.Lock()
	defer genMu.Unlock()
	g := time.Now().UnixNano()
	if g <= lastGen {
		g = lastGen + 1
	}
	lastGen = g
	return BitmapPrefix + strconv.FormatInt(g, 10)
}

func addAction(d Disk, name string) map[string]any {
	return map[string]any{"type": "block-dirty-bitmap-add", "data": map[string]any{
		"node": d.NodeName, "name": name, "granularity": BitmapGranularity, "persistent": d.Persistent()}}
}

func action(typ, node, name string) map[string]any {
	return map[string]any{"type": typ, "data": map[string]any{"node": node, "name": name}}
}

// Recover puts back what an agent that died mid-capture left (run it when
// the agent connects to a VM's monitor, before its first Freeze; dir is
// the directory the VM's captures use). First the fleecing leftovers go:
// Lifeboat's NBD exports, the NBD server if its socket is in dir, the
// fleecing jobs and overlay nodes, the overlay files in dir. Then the
// bitmaps, in one transaction: frozen bitmaps are merged into the disk's
// live one (their writes were never acknowledged) and dropped;
// inconsistent ones (QEMU was killed and could not save them) are dropped
// with the disk's live bitmap, whose record is then incomplete. known
// says, per disk, whether a live bitmap remains, so that the next Freeze
// knows the disk's changes; a disk without one gets it at the next
// Freeze, whose changes are unknown.
func Recover(ctx context.Context, m *qmp.Monitor, disks []Disk, dir string) (known []bool, err error) {
	if err := removeLeftovers(ctx, m, dir); err != nil {
		return nil, err
	}
	all, err := bitmaps(ctx, m)
	if err != nil {
		return nil, err
	}
	var actions []map[string]any
	known = make([]bool, len(disks))
	for i, d := range disks {
		list, ok := all[d.NodeName]
		if !ok {
			return nil, fmt.Errorf("disk %s: no block node %q", d.Device, d.NodeName)
		}
		live, frozen, broken := ours(list)
		for _, b := range broken {
			actions = append(actions, action("block-dirty-bitmap-remove", d.NodeName, b.Name))
		}
		if live != nil && len(broken) > 0 {
			actions = append(actions, action("block-dirty-bitmap-remove", d.NodeName, live.Name))
			live = nil
		}
		if len(frozen) > 0 && live != nil {
			// A capture was not released: its writes go back. The oldest
			// frozen bitmap records again, with the later writes merged
			// into it, so that its name still says which acknowledged
			// capture the changes count from (Since).
			sort.Slice(frozen, func(a, b int) bool { return frozen[a].Name < frozen[b].Name })
			keep := frozen[0]
			for _, b := range append(frozen[1:], *live) {
				actions = append(actions, mergeAction(d.NodeName, keep.Name, b.Name),
					action("block-dirty-bitmap-remove", d.NodeName, b.Name))
			}
			actions = append(actions, action("block-dirty-bitmap-enable", d.NodeName, keep.Name))
			live = &keep
		} else {
			for _, b := range frozen {
				actions = append(actions, action("block-dirty-bitmap-remove", d.NodeName, b.Name))
			}
		}
		known[i] = live != nil
	}
	if len(actions) == 0 {
		return known, nil
	}
	if err := m.Execute(ctx, "transaction", map[string]any{"actions": actions}, nil); err != nil {
		return nil, err
	}
	return known, nil
}

func mergeAction(node, target, source string) map[string]any {
	return map[string]any{"type": "block-dirty-bitmap-merge", "data": map[string]any{
		"node": node, "target": target, "bitmaps": []string{source}}}
}

// Frozen is the writes of a VM's disks up to one instant, held by a
// Freeze until Release; with fleecing, their data at that instant too.
type Frozen struct {
	m     *qmp.Monitor
	disks []Disk
	dir   string
	// Per disk: the frozen bitmap ("" when the changes are unknown) and
	// the new live one.
	frozen, live []string
	fleece       []fleece // per disk, with FreezeOptions.Fleece

	at       time.Time
	serverUp bool
	exports  map[string]bool // export id → added
	clients  []io.Closer
	released bool
}

// ErrReleased is returned by calls on a Frozen that was released.
var ErrReleased = errors.New("qemu: the frozen bitmaps were released")

// transactionTimeout bounds the capture's QMP transaction, which QEMU
// runs at once (it only starts jobs and swaps bitmaps).
const transactionTimeout = 30 * time.Second

// FreezeOptions tune a Freeze.
type FreezeOptions struct {
	// Dir holds the capture's temporary files: the NBD socket and the
	// fleecing overlays. One directory per VM, on the VM's host, short
	// enough for a unix socket path (about 100 bytes). Required.
	Dir string
	// Fleece holds each disk's data as it was at the freeze too, for Open
	// to read while the guest writes on.
	Fleece bool
	// AroundTransaction, when set, runs the transaction once everything
	// else is ready (overlays made, bitmaps checked): it may quiesce the
	// guest just before and resume it as soon as the transaction
	// returns, so that the guest waits for the transaction alone.
	AroundTransaction func(ctx context.Context, transaction func() error) error
}

// Freeze hands every disk's bitmap over at one instant, in one QMP
// transaction: the live bitmaps are disabled and new ones start. A disk
// that had no live bitmap (its first capture, a raw disk after QEMU
// restarted, a bitmap lost) gets one in the same transaction, and its
// changes are unknown (Extents reports nil for it).
//
// With opts.Fleece, the same transaction starts, per disk, a backup job
// with sync=none into a temporary qcow2 overlay whose backing is the
// disk: QEMU copies each area the guest is about to overwrite into the
// overlay first (copy-before-write), so the overlay reads as the disk
// at the freeze instant, for every disk at the same instant.
//
// Freeze refuses a disk with frozen or inconsistent Lifeboat bitmaps:
// Recover puts them back first.
func Freeze(ctx context.Context, m *qmp.Monitor, disks []Disk, opts FreezeOptions) (_ *Frozen, err error) {
	if opts.Dir == "" {
		return nil, errors.New("qemu: Freeze needs a directory for its temporary files")
	}
	all, err := bitmaps(ctx, m)
	if err != nil {
		return nil, err
	}
	f := &Frozen{m: m, disks: disks, dir: opts.Dir, frozen: make([]string, len(disks)),
		live: make([]string, len(disks)), exports: map[string]bool{}}
	var actions []map[string]any
	for i, d := range disks {
		list, ok := all[d.NodeName]
		if !ok {
			return nil, fmt.Errorf("disk %s: no block node %q", d.Device, d.NodeName)
		}
		live, frozen, broken := ours(list)
		if len(frozen) > 0 || len(broken) > 0 {
			return nil, fmt.Errorf("disk %s: bitmaps of another capture are still there (%d frozen, %d inconsistent); Recover puts them back", d.Device, len(frozen), len(broken))
		}
		if live != nil {
			f.frozen[i] = live.Name
			actions = append(actions, action("block-dirty-bitmap-disable", d.NodeName, live.Name))
		}
		f.live[i] = newBitmapName()
		actions = append(actions, addAction(d, f.live[i]))
	}
	if opts.Fleece {
		if err := checkRoom(opts.Dir, disks); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				err = errors.Join(err, f.teardown(context.WithoutCancel(ctx)))
			}
		}()
		tag := strconv.FormatInt(time.Now().UnixNano(), 36)
		for i, d := range disks {
			fl, err := f.addOverlay(ctx, d, tag, i)
			if err != nil {
				return nil, err
			}
			actions = append(actions, map[string]any{"type": "blockdev-backup", "data": map[string]any{
				"device": d.NodeName, "target": fl.node, "sync": "none", "job-id": fl.node}})
		}
	}
	transaction := func() error {
		// Not cut short by the caller: QEMU runs a transaction it was
		// sent whatever happens to the caller, and what it starts must
		// be known to be torn down. Bounded all the same (the guest may
		// be frozen meanwhile).
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), transactionTimeout)
		defer cancel()
		if err := m.Execute(tctx, "transaction", map[string]any{"actions": actions}, nil); err != nil {
			return err
		}
		f.at = time.Now()
		return nil
	}
	if opts.AroundTransaction != nil {
		err = opts.AroundTransaction(ctx, transaction)
	} else {
		err = transaction()
	}
	if err != nil {
		return nil, err
	}
	for i := range f.fleece {
		f.fleece[i].job = true
	}
	return f, nil
}

// Disks are the frozen disks, in Freeze's order.
func (f *Frozen) Disks() []Disk { return f.disks }

// Known says whether disk i's changes are known.
func (f *Frozen) Known(i int) bool { return f.frozen[i] != "" }

// Since names the capture disk i's changes are counted from: the token
// that capture's Token gave ("" when the changes are unknown). The
// changes apply to a replica only if it was last brought up to date by
// that capture; a caller that recorded another token (a replica reset,
// a second target) must compare every block instead.
func (f *Frozen) Since(i int) string { return f.frozen[i] }

// Token names this capture for disk i: record it with the replica once
// the point is made, and compare it with the next capture's Since.
func (f *Frozen) Token(i int) string { return f.live[i] }

// At is when the transaction that froze the disks returned: the
// capture's instant is at or before it.
func (f *Frozen) At() time.Time { return f.at }

// Release ends the capture: the NBD exports and server, the fleecing jobs,
// overlays and files go (every one is tried, whatever fails), then one
// transaction settles the bitmaps. With ack (the point was made), the
// frozen bitmaps are dropped. Without, each disk's new live bitmap is
// merged into the frozen one, which records again, and dropped: the next
// Freeze reports the writes of both. A disk
// whose changes were unknown stays unknown without ack: its new live
// bitmap is dropped, so the next Freeze starts it afresh.
func (f *Frozen) Release(ctx context.Context, ack bool) error {
	if f.released {
		return ErrReleased
	}
	err := f.teardown(ctx)
	var actions []map[string]any
	for i, d := range f.disks {
		switch {
		case f.frozen[i] != "" && !ack:
			// The frozen bitmap records again, with the writes since the
			// freeze merged in, and the new one goes: all in one
			// transaction, so no write falls between them, and the live
			// bitmap's name still names the acknowledged capture.
			actions = append(actions, mergeAction(d.NodeName, f.frozen[i], f.live[i]),
				action("block-dirty-bitmap-enable", d.NodeName, f.frozen[i]),
				action("block-dirty-bitmap-remove", d.NodeName, f.live[i]))
		case f.frozen[i] != "":
			actions = append(actions, action("block-dirty-bitmap-remove", d.NodeName, f.frozen[i]))
		case !ack:
			actions = append(actions, action("block-dirty-bitmap-remove", d.NodeName, f.live[i]))
		}
	}
	if len(actions) > 0 {
		if e := f.m.Execute(ctx, "transaction", map[string]any{"actions": actions}, nil); e != nil {
			// The bitmaps are as Freeze left them: Recover merges them
			// back later, so no write is lost.
			return errors.Join(err, e)
		}
	}
	f.released = true
	return err
}

// roundExtents widens extents to whole granules of the disk (never past
// its end) and joins neighbours.
func roundExtents(in []blocks.Extent, granule, size int64) []blocks.Extent {
	out := []blocks.Extent{}
	for _, e := range in {
		start := e.Offset / granule * granule
		end := min((e.Offset+e.Length+granule-1)/granule*granule, size)
		if n := len(out); n > 0 && out[n-1].Offset+out[n-1].Length >= start {
			out[n-1].Length = max(out[n-1].Offset+out[n-1].Length, end) - out[n-1].Offset
			continue
		}
		out = append(out, blocks.Extent{Offset: start, Length: end - start})
	}
	return out
}
