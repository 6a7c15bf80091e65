package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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
// socket at nbdSocket, then one read-only block-export-add per disk with
// the bitmap), and qemu-img map reads them through the NBD
// qemu:dirty-bitmap:NAME metadata context (qemu-img's x-dirty-bitmap
// option, which reports dirty areas as holes: "data": false). The exports
// and the server are removed before Extents returns.
//
// The NBD server is QEMU's only one: Extents fails if another one runs.
func (f *Frozen) Extents(ctx context.Context, nbdSocket string) (_ [][]blocks.Extent, err error) {
	if f.released {
		return nil, ErrReleased
	}
	out := make([][]blocks.Extent, len(f.disks))
	var todo []int
	for i := range f.disks {
		if f.Known(i) {
			todo = append(todo, i)
		}
	}
	if len(todo) == 0 {
		return out, nil
	}
	err = f.m.Execute(ctx, "nbd-server-start", map[string]any{
		"addr": map[string]any{"type": "unix", "data": map[string]any{"path": nbdSocket}}}, nil)
	if err != nil {
		return nil, err
	}
	var exports []string
	defer func() {
		// Cleanup runs even when ctx ended: the exports must not stay.
		cctx := context.WithoutCancel(ctx)
		for _, id := range exports {
			if e := f.m.Execute(cctx, "block-export-del", map[string]any{"id": id}, nil); e != nil {
				err = errors.Join(err, e)
			}
		}
		if e := f.m.Execute(cctx, "nbd-server-stop", nil, nil); e != nil {
			err = errors.Join(err, e)
		}
	}()
	for _, i := range todo {
		d := f.disks[i]
		id := ExportPrefix + d.NodeName
		err := f.m.Execute(ctx, "block-export-add", map[string]any{
			"type": "nbd", "id": id, "node-name": d.NodeName, "name": id,
			"writable": false, "bitmaps": []string{f.frozen[i]}}, nil)
		if err != nil {
			return nil, err
		}
		exports = append(exports, id)
		list, err := mapBitmap(ctx, nbdSocket, id, f.frozen[i], d.Size)
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
