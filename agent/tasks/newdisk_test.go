package tasks

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/lifeboat-dr/lifeboat/agent/blocks"
	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agent/driver/filedisk"
	"github.com/lifeboat-dr/lifeboat/agent/state"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// trackingDriver is filedisk whose captures say, as a change-tracking
// driver's do, that only the first block changed since the last capture.
// It records how each capture was released.
type trackingDriver struct {
	*filedisk.Driver
	acks *[]bool
}

func (d trackingDriver) Capture(ctx context.Context, req driver.CaptureRequest) (driver.Capture, error) {
	c, err := d.Driver.Capture(ctx, req)
	if err != nil {
		return nil, err
	}
	return trackedCapture{c, d.acks}, nil
}

type trackedCapture struct {
	driver.Capture
	acks *[]bool
}

func (c trackedCapture) Release(ack bool) error {
	*c.acks = append(*c.acks, ack)
	return c.Capture.Release(ack)
}

func (c trackedCapture) Disks() []driver.CapturedDisk {
	disks := c.Capture.Disks()
	for i := range disks {
		disks[i].Source.Changed = []blocks.Extent{{Offset: 0, Length: blocks.BlockSize}}
	}
	return disks
}

// A move seeds another target with the VM's disks marked new: the driver's
// tracked changes count from the last capture, into the old replica, and
// must not limit the copy into the empty one; and the seed leaves that
// tracking to the old replica (KeepTracking: released without ack).
func TestANewReplicaIsCopiedWholeWhateverTheDriverTrackedAndASeedKeepsTheTracking(t *testing.T) {
	root := t.TempDir()
	dir, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var acks []bool
	ts := New(Deps{Driver: trackingDriver{&filedisk.Driver{Root: root}, &acks}, State: dir, Version: "test"})
	disk := filepath.Join(root, "app", "disk0.img")
	os.MkdirAll(filepath.Dir(disk), 0o755)
	source := make([]byte, 2<<20)
	rand.Read(source)
	os.WriteFile(disk, source, 0o644)
	r, err := dirtarget.Open(filepath.Join(t.TempDir(), "new-target"), "vm_app")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := agentproto.ReplicationPayload{VMID: "app", ReplicaKey: "vm_app", PointID: "rp_seed", RetentionHours: 24, KeepTracking: true,
		Disks: []agentproto.ReplicaDisk{{ReplicaID: "d0", Path: disk, SizeBytes: int64(len(source)), New: true}}}
	res, err := ts.cycle(context.Background(), r, p, testReporter{t})
	if err != nil {
		t.Fatal(err)
	}
	if res.BytesSent < int64(len(source)) {
		t.Fatalf("the seed sent %d bytes of a %d-byte disk: the tracked extent limited it", res.BytesSent, len(source))
	}
	pr, size, err := r.OpenPoint("rp_seed", "d0")
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	got, _ := io.ReadAll(io.NewSectionReader(pr, 0, size))
	if !bytes.Equal(got, source) {
		t.Fatal("the seeded point differs from the source")
	}
	// The next cycle there (not a seed) acknowledges its capture.
	p.PointID, p.KeepTracking, p.Disks[0].New = "rp_next", false, false
	if _, err := ts.cycle(context.Background(), r, p, testReporter{t}); err != nil {
		t.Fatal(err)
	}
	if len(acks) != 2 || acks[0] || !acks[1] {
		t.Fatalf("captures released with ack %v, want [false true]: a seed must not acknowledge, a cycle must", acks)
	}
}
