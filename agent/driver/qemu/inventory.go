// Package qemu is the beginning of the qemu driver (DESIGN.md §6, issue
// 11): a VM's inventory read from its QMP monitor; change tracking with
// dirty bitmaps, handed over for all disks of a VM in one QMP
// transaction, whose changed extents are read through an NBD export of
// the frozen bitmap; and, in the same transaction, fleecing
// (copy-before-write into temporary overlays) so that the disks are read
// over NBD as they were at that instant while the guest writes on.
//
// Driver (driver.go) is the driver.Driver over a directory of QMP
// sockets; on a recovery host it also makes VMs of raw images and starts
// each in a QEMU of its own (recovery.go, launch.go). Instant failover's
// side of the driver is still to do.
package qemu

import (
	"context"
	"fmt"
	"strings"

	"github.com/lifeboat-dr/lifeboat/agent/qmp"
)

// Disk is one disk of a VM: a block node attached to a guest device.
type Disk struct {
	Device   string // the guest device: its qdev path, or its legacy drive name
	NodeName string // the top block node the device uses
	File     string // the image file (the node's filename)
	Format   string // the node's driver: qcow2, raw, ...
	Size     int64  // the disk's virtual size in bytes
	ReadOnly bool
}

// Persistent says whether the disk's format stores dirty bitmaps, so that
// tracking survives a restart of QEMU (qcow2 does; raw does not).
func (d Disk) Persistent() bool { return d.Format == "qcow2" }

// VMStatus is the VM's run state as query-status tells it.
type VMStatus struct {
	Status  string `json:"status"` // running, paused, prelaunch, shutdown, ...
	Running bool   `json:"running"`
}

// Status asks QEMU for the VM's run state.
func Status(ctx context.Context, m *qmp.Monitor) (VMStatus, error) {
	var s VMStatus
	err := m.Execute(ctx, "query-status", nil, &s)
	return s, err
}

type blockInfo struct {
	Device   string `json:"device"`
	QDev     string `json:"qdev"`
	Inserted *struct {
		NodeName string `json:"node-name"`
		File     string `json:"file"`
		Drv      string `json:"drv"`
		RO       bool   `json:"ro"`
		Image    struct {
			VirtualSize int64  `json:"virtual-size"`
			Filename    string `json:"filename"`
			Format      string `json:"format"`
		} `json:"image"`
	} `json:"inserted"`
}

// Disks lists the VM's disks: the guest devices (query-block) that have
// a medium, in QEMU's order. Empty drives (a CD-ROM without a medium) are
// left out.
func Disks(ctx context.Context, m *qmp.Monitor) ([]Disk, error) {
	var blocks []blockInfo
	if err := m.Execute(ctx, "query-block", nil, &blocks); err != nil {
		return nil, err
	}
	var disks []Disk
	for _, b := range blocks {
		in := b.Inserted
		if in == nil {
			continue
		}
		dev := b.Device
		if dev == "" {
			// -blockdev + -device: no legacy drive name, only the
			// device's path, ending in /virtio-backend for virtio-blk.
			dev = strings.TrimSuffix(b.QDev, "/virtio-backend")
		}
		if in.NodeName == "" {
			return nil, fmt.Errorf("disk %s has no block node name", dev)
		}
		file := in.Image.Filename
		if file == "" {
			file = in.File
		}
		disks = append(disks, Disk{Device: dev, NodeName: in.NodeName, File: file,
			Format: in.Drv, Size: in.Image.VirtualSize, ReadOnly: in.RO})
	}
	return disks, nil
}
