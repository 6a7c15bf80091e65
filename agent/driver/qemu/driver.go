package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/blocks"
	"github.com/lifeboat-dr/lifeboat/agent/driver"
	"github.com/lifeboat-dr/lifeboat/agent/qmp"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agent/replicate"
	"github.com/lifeboat-dr/lifeboat/agent/state"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// Name is the driver's name as agents report it.
const Name = "qemu"

// SocketSuffix ends the names of the QMP sockets the driver looks for.
const SocketSuffix = ".qmp"

// Driver is the qemu driver over a directory of QMP monitors: each
// NAME.qmp unix socket in QMPDir is one running QEMU's QMP monitor, and
// the VM's id and name are NAME. (Start QEMU with
// -qmp unix:QMPDIR/NAME.qmp,server=on,wait=off; a second -qmp monitor
// elsewhere is fine for the operator's own use: a QMP socket serves one
// client at a time, and the driver keeps its connection open.)
//
// A VM's disks are its guest devices' block nodes (Disks); the vault
// knows each by its image file's path, which is stable while the VM
// keeps its disks.
//
// Captures freeze the dirty bitmaps of all the VM's disks with fleecing
// in one transaction (Freeze) and read the disks over NBD as they were at
// that instant while the guest runs on. The changes a bitmap reports count
// from the capture last acknowledged (its Since); the driver interface
// does not say which capture a replica was last brought up to date by, so
// the driver records, in StateDir, after every acknowledged cycle, the
// Token of each (VM, replica disk id); a capture uses the bitmap's extents
// only when its Since is that recorded token, and compares every block
// otherwise (a first cycle, a raw disk after QEMU restarted, a record
// lost). What this cannot see: two targets replicating the same replica
// disk ids in turn, or a replica reset that keeps its disk ids; neither
// happens with one target per VM, which is what the vault makes today.
//
// A VM's guest agent (qemu-guest-agent) is the unix socket NAME.qga
// beside NAME.qmp (-chardev socket,path=QMPDIR/NAME.qga,server=on,wait=off,id=qga0
// -device virtio-serial -device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0).
// When it answers, an app-consistent capture freezes the guest's
// filesystems just before the transaction and thaws them as soon as it
// returns, and Shutdown asks it to power the guest off; otherwise the
// capture is crash-consistent and says why, and Shutdown uses ACPI.
//
// On a recovery host the driver also makes VMs (recovery.go): image
// files under VMDir plus a QEMU command line (launch.go) that Start runs;
// while such a VM runs it is listed from its monitor like any other, and
// while it does not, from its record, Off.
type Driver struct {
	// QMPDir holds the NAME.qmp sockets.
	QMPDir string
	// WorkDir holds one directory per VM for the captures' NBD sockets and
	// fleecing overlays; its filesystem needs room for every disk of the
	// VM being captured. Paths in it must stay short (unix sockets).
	WorkDir string
	// StateDir holds the tracking records (one JSON file per VM).
	StateDir string
	Log      *slog.Logger
	// DialTimeout bounds connecting to a monitor; 0: 5 s.
	DialTimeout time.Duration

	// VMDir holds the VMs the driver makes (failovers onto this host);
	// empty: it makes none.
	VMDir string
	// Binary is the QEMU that starts them; empty: DefaultBinary in PATH.
	Binary string
	// MachineArgs are the QEMU arguments of every VM it starts (machine,
	// memory, CPUs, accelerator, firmware, ...); nil: DefaultMachineArgs.
	MachineArgs []string
	// NetArgs are their network, unless isolated (-nic none); nil:
	// DefaultNetArgs.
	NetArgs []string

	mu       sync.Mutex
	monitors map[string]*qmp.Monitor // VM id → open connection
	busy     map[string]bool         // VM id → a capture holds its disks
}

var _ driver.Driver = (*Driver)(nil)

// Name implements driver.Driver.
func (d *Driver) Name() string { return Name }

// DataDir is the work directory: the fleecing overlays take its space.
func (d *Driver) DataDir() string { return d.WorkDir }

func (d *Driver) logger() *slog.Logger {
	if d.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return d.Log
}

// vmIDs lists the VMs whose sockets are in QMPDir, sorted.
func (d *Driver) vmIDs() ([]string, error) {
	entries, err := os.ReadDir(d.QMPDir)
	if err != nil {
		return nil, fmt.Errorf("list QMP sockets in %s: %w", d.QMPDir, err)
	}
	var ids []string
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, SocketSuffix) || e.Type()&os.ModeSocket == 0 {
			continue
		}
		if id := strings.TrimSuffix(name, SocketSuffix); id != "" && !strings.HasPrefix(id, ".") {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids, nil
}

func (d *Driver) socket(vmID string) string {
	return filepath.Join(d.QMPDir, vmID+SocketSuffix)
}

// vmDir is a VM's directory for its captures' temporary files.
func (d *Driver) vmDir(vmID string) string { return filepath.Join(d.WorkDir, vmID) }

// monitor returns the open connection to a VM's monitor, connecting
// (and, on every new connection, recovering what an earlier capture left)
// when there is none.
func (d *Driver) monitor(ctx context.Context, vmID string) (*qmp.Monitor, error) {
	if vmID == "" || strings.ContainsAny(vmID, "/\x00") {
		return nil, fmt.Errorf("%w: %q is not a VM id", driver.ErrVMNotFound, vmID)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if m := d.monitors[vmID]; m != nil {
		select {
		case <-m.Done():
			delete(d.monitors, vmID)
		default:
			return m, nil
		}
	}
	sock := d.socket(vmID)
	if _, err := os.Lstat(sock); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: VM %s has no QMP socket %s", driver.ErrVMNotFound, vmID, sock)
	}
	timeout := d.DialTimeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m, err := qmp.Dial(dctx, sock)
	if err != nil {
		return nil, fmt.Errorf("VM %s: its QMP monitor does not answer (QEMU stopped, or another client holds the socket): %w", vmID, err)
	}
	if err := d.recoverVM(ctx, vmID, m); err != nil {
		m.Close()
		return nil, err
	}
	if d.monitors == nil {
		d.monitors = map[string]*qmp.Monitor{}
	}
	d.monitors[vmID] = m
	return m, nil
}

// recoverVM removes what a capture of the VM left behind (an agent that
// died mid-capture) and puts its bitmaps back. A capture this agent holds
// is on another connection, which ended: its frozen bitmaps are merged
// back too, so no write is lost.
func (d *Driver) recoverVM(ctx context.Context, vmID string, m *qmp.Monitor) error {
	// First, whatever else fails: a guest frozen by a dead capture waits
	// for nothing else.
	d.thawLeftFrozen(ctx, vmID)
	if err := os.MkdirAll(d.vmDir(vmID), 0o700); err != nil {
		return err
	}
	// A dead capture's backup job keeps its copy-before-write filter above
	// each disk, and query-block names the filter as the device's node:
	// the leftovers go before the disks are listed (Recover removes them
	// again, finding none).
	if err := removeLeftovers(ctx, m, d.vmDir(vmID)); err != nil {
		return fmt.Errorf("VM %s: %w", vmID, err)
	}
	disks, err := Disks(ctx, m)
	if err != nil {
		return fmt.Errorf("VM %s: %w", vmID, err)
	}
	if _, err := Recover(ctx, m, disks, d.vmDir(vmID)); err != nil {
		return fmt.Errorf("VM %s: %w", vmID, err)
	}
	return nil
}

// Close ends the driver's monitor connections.
func (d *Driver) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, m := range d.monitors {
		m.Close()
		delete(d.monitors, id)
	}
	return nil
}

// Check says whether the QMP directory can be read, and how many of its
// sockets answer.
func (d *Driver) Check(ctx context.Context) (string, error) {
	ids, err := d.vmIDs()
	if err != nil {
		return "", err
	}
	var bad []string
	disks := 0
	for _, id := range ids {
		m, err := d.monitor(ctx, id)
		if err != nil {
			bad = append(bad, err.Error())
			continue
		}
		list, err := Disks(ctx, m)
		if err != nil {
			bad = append(bad, fmt.Sprintf("VM %s: %v", id, err))
			continue
		}
		disks += len(list)
	}
	if len(bad) > 0 {
		return "", fmt.Errorf("%d of %d QMP socket(s) in %s unusable: %s", len(bad), len(ids), d.QMPDir, strings.Join(bad, "; "))
	}
	return fmt.Sprintf("%d QMP socket(s) in %s, %d VM(s) answering, %d disk(s)", len(ids), d.QMPDir, len(ids), disks), nil
}

// Recover connects to every VM's monitor, which recovers each (see
// monitor). A VM that does not answer is logged and recovered when it
// first does.
func (d *Driver) Recover(ctx context.Context) error {
	if err := os.MkdirAll(d.WorkDir, 0o700); err != nil {
		return err
	}
	if err := d.recoverVMDir(); err != nil {
		return err
	}
	ids, err := d.vmIDs()
	if err != nil {
		return err
	}
	for _, id := range ids {
		if _, err := d.monitor(ctx, id); err != nil {
			d.logger().Warn("VM not recovered now: it will be when its monitor answers", "vm", id, slog.Any("error", err))
		}
	}
	return nil
}

// powerState maps query-status to agentproto's power states. A guest that
// runs or is paused (paused, suspended, stopped by an I/O error, in a
// migration, ...) is Running: its QEMU holds its state and it can go on
// writing. prelaunch (QEMU started with -S, the guest never ran) and
// shutdown (the guest powered off, QEMU kept by -no-shutdown) are Off:
// the guest writes nothing, so a planned failover may go on; a prelaunch
// VM starts with Start. A QEMU that exited has no monitor: its VM is not
// listed, and PowerState says Unknown with an error.
func powerState(s VMStatus) string {
	switch {
	case s.Running:
		return agentproto.PowerRunning
	case s.Status == "prelaunch" || s.Status == "shutdown":
		return agentproto.PowerOff
	default:
		return agentproto.PowerRunning
	}
}

// Inventory lists every VM whose monitor answers, with its disks (each
// by its image file) and power state, and every VM under VMDir whose
// monitor does not (Off, or Unknown while its QEMU runs), sorted by id. A
// VM whose monitor does not answer and that the driver did not make is
// logged and left out.
func (d *Driver) Inventory(ctx context.Context) ([]agentproto.VM, error) {
	ids, err := d.vmIDs()
	if err != nil {
		return nil, err
	}
	made, err := d.madeVMs()
	if err != nil {
		return nil, err
	}
	vms := []agentproto.VM{}
	for _, id := range ids {
		if mv := made[id]; mv != nil {
			continue // below
		}
		vm, err := d.vm(ctx, id)
		if err != nil {
			d.logger().Warn("VM skipped: its monitor does not answer", "vm", id, slog.Any("error", err))
			continue
		}
		vms = append(vms, vm)
	}
	for _, mv := range made {
		vms = append(vms, d.listMade(ctx, mv))
	}
	sortVMs(vms)
	return vms, nil
}

func (d *Driver) vm(ctx context.Context, id string) (agentproto.VM, error) {
	m, err := d.monitor(ctx, id)
	if err != nil {
		return agentproto.VM{}, err
	}
	st, err := Status(ctx, m)
	if err != nil {
		return agentproto.VM{}, err
	}
	disks, err := Disks(ctx, m)
	if err != nil {
		return agentproto.VM{}, err
	}
	vm := agentproto.VM{ID: id, Name: id, PowerState: powerState(st), Disks: []agentproto.Disk{}}
	for _, dk := range disks {
		vm.Disks = append(vm.Disks, agentproto.Disk{Path: dk.File, SizeBytes: dk.Size, Format: dk.Format})
	}
	return vm, nil
}

// match finds the VM's disk for each of the vault's, by image file.
func match(vmID string, have []Disk, want []driver.DiskRef) ([]Disk, error) {
	var out []Disk
	var problems []string
	for _, w := range want {
		found := false
		for _, h := range have {
			if h.File != w.Path {
				continue
			}
			found = true
			if h.Size != w.SizeBytes {
				problems = append(problems, fmt.Sprintf("%s is %d bytes, the vault expects %d; wait for the next inventory", w.Path, h.Size, w.SizeBytes))
			}
			out = append(out, h)
			break
		}
		if !found {
			problems = append(problems, fmt.Sprintf("%s is not a disk of VM %s", w.Path, vmID))
		}
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "; "))
	}
	return out, nil
}

// CheckVM says whether each disk is attached to the VM with the size the
// vault expects.
func (d *Driver) CheckVM(ctx context.Context, vmID string, disks []driver.DiskRef) error {
	m, err := d.monitor(ctx, vmID)
	if err != nil {
		return err
	}
	have, err := Disks(ctx, m)
	if err != nil {
		return err
	}
	_, err = match(vmID, have, disks)
	return err
}

// PowerState implements driver.Driver from query-status (see powerState).
func (d *Driver) PowerState(ctx context.Context, vmID string) (string, error) {
	m, err := d.monitor(ctx, vmID)
	if err != nil {
		if state, ok := d.offline(ctx, vmID); ok && state == agentproto.PowerOff {
			return state, nil // a VM the driver made, whose QEMU is not running
		}
		return agentproto.PowerUnknown, err
	}
	st, err := Status(ctx, m)
	if err != nil {
		return agentproto.PowerUnknown, err
	}
	return powerState(st), nil
}

// Shutdown asks the guest to power off (its QEMU kept, in state
// shutdown: keepAfterPowerOff), through its guest agent when it
// answers, else through ACPI (system_powerdown; see powerdown), and
// waits, at most timeout, for QEMU's SHUTDOWN event, a status of
// shutdown, or QEMU's exit (its monitor closes, and the socket no longer
// answers). A guest that ignores it (no OS, no acpid) does not stop:
// the error is a CodeVMWillNotStop, and the VM still runs.
func (d *Driver) Shutdown(ctx context.Context, vmID string, timeout time.Duration) error {
	m, err := d.monitor(ctx, vmID)
	if err != nil {
		if state, ok := d.offline(ctx, vmID); ok && state == agentproto.PowerOff {
			return nil // a VM the driver made, whose QEMU is not running
		}
		return err
	}
	st, err := Status(ctx, m)
	if err != nil {
		return err
	}
	if powerState(st) == agentproto.PowerOff {
		return nil
	}
	events, stop := m.Subscribe()
	defer stop()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	d.keepAfterPowerOff(ctx, vmID, m)
	how, err := d.powerdown(ctx, vmID, m)
	if err != nil {
		return err
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				// The connection ended: QEMU exited if its socket no
				// longer answers.
				if d.exited(ctx, vmID) {
					return nil
				}
				events = nil
			} else if ev.Name == "SHUTDOWN" {
				return nil
			}
		case <-tick.C:
			if st, err := Status(ctx, m); err == nil && st.Status == "shutdown" {
				return nil
			}
		case <-deadline.C:
			return &agentproto.TaskError{Code: agentproto.CodeVMWillNotStop, Message: fmt.Sprintf(
				"VM %s did not stop within %v of %s: its guest ignored it, and it still runs. Shut it down on the host, then restart the job", vmID, timeout, how)}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// exited says whether the VM's QEMU is gone: its monitor no longer
// answers.
func (d *Driver) exited(ctx context.Context, vmID string) bool {
	d.mu.Lock()
	delete(d.monitors, vmID)
	d.mu.Unlock()
	_, err := d.monitor(ctx, vmID)
	return err != nil
}

// Start powers a VM on. A VM the driver made (under VMDir) gets a new
// QEMU unless its guest runs (startMade). Any other VM's guest is let run:
// cont for a VM that is paused or was started with -S (prelaunch), a
// reset then cont for one whose guest powered off (QEMU kept by
// -no-shutdown); a QEMU that exited cannot be started again from its
// monitor (there is none),
// nor can the driver take the network away from a QEMU it did not start
// (an isolated start).
func (d *Driver) Start(ctx context.Context, vmID string, opts driver.StartOptions) error {
	if mv, err := d.made(vmID); err != nil {
		return err
	} else if mv != nil {
		return d.startMade(ctx, mv, opts)
	}
	if opts.Isolated {
		return &agentproto.TaskError{Code: agentproto.CodeVMStartFailed, Message: fmt.Sprintf(
			"VM %s: its QEMU was started outside Lifeboat, so the qemu driver cannot start it isolated from the network; a test failover makes its own VM (give the agent --qemu-vm-dir)", vmID)}
	}
	m, err := d.monitor(ctx, vmID)
	if err != nil {
		return &agentproto.TaskError{Code: agentproto.CodeVMStartFailed, Message: fmt.Sprintf(
			"VM %s: %v; a QEMU that exited cannot be started from its monitor: start its QEMU on the host", vmID, err)}
	}
	st, err := Status(ctx, m)
	if err != nil {
		return err
	}
	if st.Running {
		return nil
	}
	if st.Status == "shutdown" {
		// Its guest powered off and QEMU stayed (-no-shutdown): a reset
		// boots it again, as a power button would.
		if err := d.resetAfterPowerOff(ctx, vmID, m); err != nil {
			return &agentproto.TaskError{Code: agentproto.CodeVMStartFailed, Message: fmt.Sprintf("VM %s: its guest powered off and a reset failed: %v; start it on the host", vmID, err)}
		}
	}
	if err := m.Execute(ctx, "cont", nil, nil); err != nil {
		return &agentproto.TaskError{Code: agentproto.CodeVMStartFailed, Message: fmt.Sprintf("VM %s (%s): %v", vmID, st.Status, err)}
	}
	return nil
}

// Capture freezes the bitmaps of the requested disks with fleecing, in
// one transaction, and serves each disk as at that instant; a disk's
// Changed is its bitmap's extents when the tracking record says they
// describe its replica (see Driver), else nil (every block compared).
func (d *Driver) Capture(ctx context.Context, req driver.CaptureRequest) (_ driver.Capture, err error) {
	m, err := d.monitor(ctx, req.VMID)
	if err != nil {
		return nil, err
	}
	have, err := Disks(ctx, m)
	if err != nil {
		return nil, err
	}
	disks, err := match(req.VMID, have, req.Disks)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	if d.busy[req.VMID] {
		d.mu.Unlock()
		return nil, fmt.Errorf("VM %s: another capture of it runs", req.VMID)
	}
	if d.busy == nil {
		d.busy = map[string]bool{}
	}
	d.busy[req.VMID] = true
	d.mu.Unlock()
	c := &capture{d: d, m: m, vmID: req.VMID, req: req}
	defer func() {
		if err != nil {
			c.Release(false)
		}
	}()
	opts := FreezeOptions{Dir: d.vmDir(req.VMID), Fleece: true}
	if req.AppConsistent {
		opts.AroundTransaction = c.quiesced
	}
	f, err := Freeze(ctx, m, disks, opts)
	if err != nil {
		// The transaction may have run even so (an answer lost, a
		// timeout): the next connection's recovery removes what it
		// left and merges the bitmaps back before any other capture.
		d.mu.Lock()
		if d.monitors[req.VMID] == m {
			m.Close()
			delete(d.monitors, req.VMID)
		}
		d.mu.Unlock()
		return nil, err
	}
	c.f = f
	recorded, err := d.readTracking(req.VMID)
	if err != nil {
		d.logger().Warn("tracking record unreadable: every block is compared", "vm", req.VMID, slog.Any("error", err))
		recorded = map[string]string{}
	}
	use := make([]bool, len(disks))
	tracked := false
	for i, ref := range req.Disks {
		use[i] = f.Known(i) && recorded[ref.ID] != "" && recorded[ref.ID] == f.Since(i)
		tracked = tracked || use[i]
	}
	var ext [][]blocks.Extent
	if tracked {
		if ext, err = f.Extents(ctx); err != nil {
			return nil, err
		}
	}
	for i, ref := range req.Disks {
		r, size, err := f.Open(ctx, i)
		if err != nil {
			return nil, err
		}
		src := replicate.Source{Name: disks[i].File, Reader: r, Size: size}
		if use[i] {
			src.Changed = ext[i]
		}
		c.disks = append(c.disks, driver.CapturedDisk{ID: ref.ID, Source: src})
	}
	return c, nil
}

type capture struct {
	d     *Driver
	m     *qmp.Monitor
	vmID  string
	req   driver.CaptureRequest
	f     *Frozen
	disks []driver.CapturedDisk
	note  string
	app   bool // the guest's filesystems were frozen from before the transaction to after it
	once  sync.Once
	err   error
}

func (c *capture) Disks() []driver.CapturedDisk { return c.disks }

// ReadDone: the capture is as at the transaction, app-consistent when
// the guest's filesystems were frozen then, else crash-consistent.
func (c *capture) ReadDone() driver.Result {
	consistency := replica.ConsistencyCrash
	if c.app {
		consistency = replica.ConsistencyApp
	}
	return driver.Result{Consistency: consistency, Time: c.f.At(), Method: driver.MethodFleece, Note: c.note}
}

// Release releases the frozen bitmaps (Frozen.Release) and, with ack,
// records each disk's Token as what its replica now matches. A record
// that cannot be written only costs the next cycle a full compare.
func (c *capture) Release(ack bool) error {
	c.once.Do(func() {
		defer func() {
			c.d.mu.Lock()
			delete(c.d.busy, c.vmID)
			if c.err != nil && c.d.monitors[c.vmID] == c.m {
				// The bitmaps may be as Freeze left them: the next
				// connection's recovery merges them back.
				c.m.Close()
				delete(c.d.monitors, c.vmID)
			}
			c.d.mu.Unlock()
		}()
		if c.f == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if !ack {
			c.err = c.f.Release(ctx, false)
			return
		}
		// The old record goes first: should the agent die between the
		// bitmaps' release and the new record, the next capture compares
		// every block rather than trust a stale one.
		if err := c.d.writeTracking(c.vmID, nil, c.req.Disks); err != nil {
			c.err = err
			c.f.Release(ctx, false)
			return
		}
		if err := c.f.Release(ctx, true); err != nil {
			c.err = err
			return
		}
		tokens := map[string]string{}
		for i, ref := range c.req.Disks {
			tokens[ref.ID] = c.f.Token(i)
		}
		if err := c.d.writeTracking(c.vmID, tokens, nil); err != nil {
			c.d.logger().Warn("tracking record not written: the next cycle compares every block", "vm", c.vmID, slog.Any("error", err))
		}
	})
	return c.err
}

// trackingPath is the VM's record: replica disk id → the Token of the
// acknowledged capture its replica equals.
func (d *Driver) trackingPath(vmID string) string {
	return filepath.Join(d.StateDir, "qemu-tracking", vmID+".json")
}

func (d *Driver) readTracking(vmID string) (map[string]string, error) {
	b, err := os.ReadFile(d.trackingPath(vmID))
	if errors.Is(err, os.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	rec := map[string]string{}
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, err
	}
	return rec, nil
}

// writeTracking sets the tokens given and forgets those of drop.
func (d *Driver) writeTracking(vmID string, set map[string]string, drop []driver.DiskRef) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	rec, err := d.readTracking(vmID)
	if err != nil {
		rec = map[string]string{}
	}
	for _, ref := range drop {
		delete(rec, ref.ID)
	}
	for id, tok := range set {
		rec[id] = tok
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	p := d.trackingPath(vmID)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	return state.WriteAtomic(p, b, 0o600)
}
