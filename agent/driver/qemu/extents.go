package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"

	"github.com/lifeboat-dr/lifeboat/agent/blocks"
)

// ExportPrefix starts the ids (and NBD names) of the block exports
// Lifeboat makes.
const ExportPrefix = "lifeboat-"

// Extents reads the changed extents of every frozen disk: per disk, in
// Freeze's order, the areas its frozen bitmap marks, in whole granules
// (BitmapGranularity) within the disk, in order; an empty, non-nil list
// when nothing changed; nil when the disk's changes are unknown.
//
// QEMU serves the frozen bitmaps over NBD (nbd-server-start on a unix
// socket in the capture's directory, then one read-only block-export-add
// per disk with the bitmap), and qemu-img map reads them through the NBD
// qemu:dirty-bitmap:NAME metadata context (qemu-img's x-dirty-bitmap
// option, which reports dirty areas as holes: "data": false). Release
// removes the exports and the server.
//
// The NBD server is QEMU's only one: Extents fails if another one runs.
func (f *Frozen) Extents(ctx context.Context) ([][]blocks.Extent, error) {
	if f.released {
		return nil, ErrReleased
	}
	out := make([][]blocks.Extent, len(f.disks))
	for i, d := range f.disks {
		if !f.Known(i) {
			continue
		}
		// By index, not node name: a disk attached with a plain -drive has
		// an automatic name ("#block198") that QEMU refuses in an export id.
		id := fmt.Sprintf("%sbitmap-%d", ExportPrefix, i)
		if err := f.export(ctx, id, d.NodeName, []string{f.frozen[i]}); err != nil {
			return nil, err
		}
		list, err := mapBitmap(ctx, f.socket(), id, f.frozen[i], d.Size)
		if err != nil {
			return nil, fmt.Errorf("disk %s: %w", d.Device, err)
		}
		out[i] = roundExtents(list, BitmapGranularity, d.Size)
	}
	return out, nil
}

// imageOpt escapes a value for qemu's --image-opts: commas are doubled.
func imageOpt(v string) string { return strings.ReplaceAll(v, ",", ",,") }

// mapBitmap runs qemu-img map on an NBD export with a dirty bitmap
// context and returns the dirty areas.
func mapBitmap(ctx context.Context, socket, export, bitmap string, size int64) ([]blocks.Extent, error) {
	opts := "driver=nbd,server.type=unix,server.path=" + imageOpt(socket) +
		",export=" + imageOpt(export) + ",x-dirty-bitmap=qemu:dirty-bitmap:" + imageOpt(bitmap)
	cmd := exec.CommandContext(ctx, "qemu-img", "map", "--output=json", "--image-opts", opts)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("qemu-img map of bitmap %s: %w: %s", bitmap, err, strings.TrimSpace(stderr.String()))
	}
	var entries []struct {
		Start  int64 `json:"start"`
		Length int64 `json:"length"`
		Data   bool  `json:"data"`
	}
	if err := json.Unmarshal(b, &entries); err != nil {
		return nil, fmt.Errorf("qemu-img map of bitmap %s: %w", bitmap, err)
	}
	var out []blocks.Extent
	var covered int64
	for _, e := range entries {
		if e.Start != covered {
			return nil, fmt.Errorf("qemu-img map of bitmap %s: a gap at %d", bitmap, covered)
		}
		covered = e.Start + e.Length
		if !e.Data {
			out = append(out, blocks.Extent{Offset: e.Start, Length: e.Length})
		}
	}
	if covered != size {
		return nil, fmt.Errorf("qemu-img map of bitmap %s: it covers %d bytes of %d", bitmap, covered, size)
	}
	return out, nil
}
