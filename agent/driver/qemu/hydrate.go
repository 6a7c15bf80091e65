package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/qmp"
)

// Instant failover (issue 11, item 6): the recovered VM starts at once on
// a local qcow2 overlay whose backing is the recovery point, served over
// NBD by the agent (nbd.Server), and a block-stream job copies every
// block of the backing into the overlay while the guest runs. Blocks the
// guest reads before they are copied are read through the backing; its
// writes go to the overlay, and the job never overwrites them (it copies
// only what the overlay does not have). When the job completes QEMU drops
// the backing: the VM runs from its local disk alone, and the export can
// go.

// NBDBacking is the backing file spec of an overlay on the NBD export
// name at the unix socket: a json: spec (raw over nbd) rather than an
// nbd+unix:// URI, for reconnect-delay: when the connection breaks (the
// recovery host's agent restarts), QEMU reconnects, and for that long
// holds the guest's reads and the copy's instead of failing them. After
// it they fail, while QEMU goes on trying to reconnect.
func NBDBacking(socket, export string, reconnectDelay time.Duration) string {
	spec, _ := json.Marshal(map[string]any{"driver": "raw", "file": map[string]any{
		"driver": "nbd", "export": export,
		"server":          map[string]any{"type": "unix", "path": socket},
		"reconnect-delay": int64(reconnectDelay / time.Second)}})
	return "json:" + string(spec)
}

// CreateOverlay creates the qcow2 overlay path of a recovered disk, whose
// backing (NBDBacking) holds the recovery point. qemu-img opens the
// backing to learn the disk's size, so its server must run.
func CreateOverlay(ctx context.Context, path, backing string) error {
	out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", backing, path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("qemu: create the overlay %s: qemu-img: %w: %s", path, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// HydratePrefix starts the ids of hydration jobs. The capture's cleanup
// (removeLeftovers) cancels only FleecePrefix jobs, so a hydration
// survives an agent restart.
const HydratePrefix = "lbhy-"

// ErrHydrationCancelled is what Wait returns after Cancel: the overlay
// keeps what was copied and its backing; Hydrate again goes on from there.
var ErrHydrationCancelled = errors.New("qemu: hydration cancelled")

// HydrateOptions are how Hydrate copies.
type HydrateOptions struct {
	// JobID names the job in QEMU; default HydratePrefix and the node's
	// name (without an automatic name's '#').
	JobID string
	// Speed caps the copy in bytes per second; 0 is unlimited.
	Speed int64
}

// HydrateProgress is how far a hydration got: Done of Total bytes of the
// disk were looked at (copied, or found in the overlay already).
type HydrateProgress struct {
	Done, Total int64
}

// Hydration is a block-stream job copying a disk's backing into it.
type Hydration struct {
	m     *qmp.Monitor
	JobID string
	Node  string // the overlay's node
}

// Hydrate starts copying the backing of node (the qcow2 overlay a guest
// device uses; Disk.NodeName) into it, and returns at once. The job runs
// in QEMU: it goes on when the monitor's connection ends (the agent
// restarts), and AttachHydration finds it again.
func Hydrate(ctx context.Context, m *qmp.Monitor, node string, opts HydrateOptions) (*Hydration, error) {
	backing, err := Backing(ctx, m, node)
	if err != nil {
		return nil, err
	}
	if backing == "" {
		return nil, fmt.Errorf("qemu: hydrate node %s: it has no backing file (hydrated already?)", node)
	}
	h := AttachHydration(m, node, opts.JobID)
	// auto-finalize off: see finalize.
	args := map[string]any{"job-id": h.JobID, "device": node, "on-error": "report", "auto-finalize": false}
	if opts.Speed > 0 {
		args["speed"] = opts.Speed
	}
	// No base: everything below the overlay is copied into it, and the
	// overlay ends with no backing at all.
	if err := m.Execute(ctx, "block-stream", args, nil); err != nil {
		return nil, fmt.Errorf("qemu: hydrate node %s from %s: %w", node, backing, err)
	}
	return h, nil
}

// AttachHydration is the hydration of node by the job jobID (empty: the
// default Hydrate gives it), started earlier, maybe by an agent before it
// restarted.
func AttachHydration(m *qmp.Monitor, node, jobID string) *Hydration {
	if jobID == "" {
		jobID = HydratePrefix + strings.TrimPrefix(node, "#")
	}
	return &Hydration{m: m, JobID: jobID, Node: node}
}

type blockJob struct {
	Device string `json:"device"` // the job's id
	Type   string `json:"type"`
	Len    int64  `json:"len"`
	Offset int64  `json:"offset"`
	Status string `json:"status"` // running, paused, pending, ...
}

// Progress says how far the job got; running is false once the job is
// gone from QEMU (completed, failed or cancelled: Wait tells which).
func (h *Hydration) Progress(ctx context.Context) (p HydrateProgress, running bool, err error) {
	j, err := h.job(ctx)
	if err != nil || j == nil {
		return p, false, err
	}
	return HydrateProgress{Done: j.Offset, Total: j.Len}, true, nil
}

func (h *Hydration) job(ctx context.Context) (*blockJob, error) {
	var jobs []blockJob
	if err := h.m.Execute(ctx, "query-block-jobs", nil, &jobs); err != nil {
		return nil, fmt.Errorf("qemu: hydration %s: %w", h.JobID, err)
	}
	for _, j := range jobs {
		if j.Device == h.JobID {
			return &j, nil
		}
	}
	return nil, nil
}

// Cancel stops the copy; Wait then returns ErrHydrationCancelled. What
// was copied stays in the overlay, and the VM goes on reading the rest
// through the backing.
func (h *Hydration) Cancel(ctx context.Context) error {
	err := h.m.Execute(ctx, "block-job-cancel", map[string]any{"device": h.JobID, "force": true}, nil)
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("qemu: cancel hydration %s: %w", h.JobID, err)
	}
	return nil
}

type jobEnd struct {
	Device string `json:"device"`
	Len    int64  `json:"len"`
	Offset int64  `json:"offset"`
	Error  string `json:"error"`
}

// Wait waits until the job ends and calls progress (when not nil) every
// interval meanwhile. It returns nil once the disk is hydrated (the
// overlay has no backing any more), ErrHydrationCancelled after Cancel,
// or the job's error (the backing failed: its NBD server went away, the
// point's storage failed). An ended ctx stops the wait, not the job.
func (h *Hydration) Wait(ctx context.Context, interval time.Duration, progress func(HydrateProgress)) error {
	// Subscribe before asking, so that an end between the two is seen.
	events, stop := h.m.Subscribe()
	defer stop()
	if interval <= 0 {
		interval = time.Second
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		j, err := h.job(ctx)
		if err != nil {
			return err
		}
		if j == nil {
			// It ended: its event, if it was seen, says how; it is
			// queued already when the job is gone from the list.
			end, err := h.lastEvent(ctx, events)
			if err != nil {
				return err
			}
			return h.ended(ctx, end)
		}
		if progress != nil {
			progress(HydrateProgress{Done: j.Offset, Total: j.Len})
		}
		if j.Status == "pending" {
			if err := h.finalize(ctx); err != nil {
				return err
			}
		}
		if end, err := h.next(ctx, events, tick.C); end != nil || err != nil {
			if err != nil {
				return err
			}
			return h.ended(ctx, end)
		}
	}
}

// next waits for the job's end (its event) or the next tick (nil, nil).
func (h *Hydration) next(ctx context.Context, events <-chan qmp.Event, tick <-chan time.Time) (*jobEnd, error) {
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("qemu: hydration %s: %w", h.JobID, ctx.Err())
		case <-tick:
			return nil, nil
		case ev, ok := <-events:
			if !ok {
				return nil, fmt.Errorf("qemu: hydration %s: %w", h.JobID, qmp.ErrClosed)
			}
			if ev.Name == "BLOCK_JOB_PENDING" {
				return nil, nil // ask again, and finalize
			}
			var end jobEnd
			if json.Unmarshal(ev.Data, &end) != nil || end.Device != h.JobID {
				continue
			}
			switch ev.Name {
			case "BLOCK_JOB_COMPLETED":
				return &end, nil
			case "BLOCK_JOB_CANCELLED":
				return nil, ErrHydrationCancelled
			}
		}
	}
}

// lastEvent looks among the events queued for the job's end, a moment
// only: nil when the job ended before this wait subscribed.
func (h *Hydration) lastEvent(ctx context.Context, events <-chan qmp.Event) (*jobEnd, error) {
	timeout := time.NewTimer(200 * time.Millisecond)
	defer timeout.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("qemu: hydration %s: %w", h.JobID, ctx.Err())
		case <-timeout.C:
			return nil, nil
		case ev, ok := <-events:
			if !ok {
				return nil, nil
			}
			var end jobEnd
			if json.Unmarshal(ev.Data, &end) != nil || end.Device != h.JobID {
				continue
			}
			switch ev.Name {
			case "BLOCK_JOB_COMPLETED":
				return &end, nil
			case "BLOCK_JOB_CANCELLED":
				return nil, ErrHydrationCancelled
			}
		}
	}
}

// ended decides how a job that is gone ended, from its event when it was
// seen (nil: not seen): hydrated when it reported no error and the
// overlay lost its backing.
func (h *Hydration) ended(ctx context.Context, end *jobEnd) error {
	backing, err := Backing(ctx, h.m, h.Node)
	if err != nil {
		return err
	}
	if backing == "" && (end == nil || end.Error == "") {
		// The header without the backing, made stable: the VM can start
		// again without the export.
		return flush(ctx, h.m)
	}
	why := "it ended with the overlay still backed (cancelled, or failed while no one watched)"
	if end != nil {
		why = fmt.Sprintf("at byte %d of %d: %s", end.Offset, end.Len, end.Error)
		if end.Error == "" {
			why = "it completed, but the overlay still has its backing"
		}
	}
	return fmt.Errorf("qemu: hydration of node %s from %s failed: %s; the VM still reads what was not copied from there, and Hydrate again goes on from where it stopped",
		h.Node, backing, why)
}

// finalize ends a job that copied everything. QEMU 7.2's stream job
// writes the overlay's header without the backing when it finalizes, and
// does not flush first: the clusters it copied may have their qcow2
// metadata only in QEMU's memory, and a QEMU killed then leaves an
// overlay that neither has the data nor points to where it is (a test
// saw it). So the job waits in "pending" (auto-finalize off) until every
// copy is made stable, and only then drops the backing.
func (h *Hydration) finalize(ctx context.Context) error {
	if err := flush(ctx, h.m); err != nil {
		return fmt.Errorf("qemu: hydration %s: %w", h.JobID, err)
	}
	if err := h.m.Execute(ctx, "job-finalize", map[string]any{"id": h.JobID}, nil); err != nil {
		return fmt.Errorf("qemu: hydration %s: %w", h.JobID, err)
	}
	return nil
}

// flush makes every block node's writes stable. QMP has no flush
// command; "stop" flushes all (bdrv_flush_all), so a running VM is
// paused for as long as its caches take to write, and goes on.
func flush(ctx context.Context, m *qmp.Monitor) error {
	st, err := Status(ctx, m)
	if err != nil {
		return err
	}
	if err := m.Execute(ctx, "stop", nil, nil); err != nil {
		return fmt.Errorf("flush the disks: %w", err)
	}
	if st.Running {
		if err := m.Execute(ctx, "cont", nil, nil); err != nil {
			return fmt.Errorf("resume the VM after flushing its disks: %w", err)
		}
	}
	return nil
}

// Backing is the backing file of a block node as QEMU has it (a file
// name, an nbd:// URI or a json: spec), or "" when it has none.
func Backing(ctx context.Context, m *qmp.Monitor, node string) (string, error) {
	var nodes []struct {
		NodeName    string `json:"node-name"`
		BackingFile string `json:"backing_file"`
		Image       struct {
			BackingFilename string `json:"backing-filename"`
		} `json:"image"`
	}
	if err := m.Execute(ctx, "query-named-block-nodes", map[string]any{"flat": true}, &nodes); err != nil {
		return "", err
	}
	for _, n := range nodes {
		if n.NodeName == node {
			if n.BackingFile != "" {
				return n.BackingFile, nil
			}
			return n.Image.BackingFilename, nil
		}
	}
	return "", fmt.Errorf("qemu: no block node %s", node)
}
