package tasks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
	"github.com/lifeboat-dr/lifeboat/agent/replicate"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// protectionCheck checks what protecting the VM needs; a failed check fails
// the task, so the job stops before anything is created.
func (ts *Tasks) protectionCheck(ctx context.Context, t agentproto.Task, rep Reporter) (any, error) {
	p, err := replicationPayload(t)
	if err != nil {
		return nil, err
	}
	result := agentproto.PrerequisitesResult{}
	add := func(name string, err error, ok string) {
		c := agentproto.Check{Name: name, OK: err == nil, Message: ok}
		if err != nil {
			c.Message = err.Error()
		}
		result.Checks = append(result.Checks, c)
	}
	rep.Set(agentproto.Progress{Step: "disks", Percent: 0})
	add("Disks of VM "+p.VMID, ts.d.Driver.CheckVM(ctx, p.VMID, diskRefs(p)), "readable, raw, sizes as reported")
	rep.Set(agentproto.Progress{Step: "target", Percent: 80})
	switch p.Target.Kind {
	case "azure_blob":
		add("Target container "+p.Target.ContainerURL, ts.checkBlobTarget(ctx, t, p), "reachable with the SAS the vault issued")
	default:
		dirErr := checkWritable(p.Target.Path, !p.Target.MustExist)
		if dirErr == nil && p.Target.InUse && !dirtarget.Mounted(p.Target.Path) {
			dirErr = fmt.Errorf("holds no %s, though other VMs' replicas are on this target: is the share mounted here?", dirtarget.MarkerName)
		}
		add("Target directory "+p.Target.Path, dirErr, "writable")
		if dirErr == nil { // without the directory its free space says nothing more
			space := freeSpace(p.Target.Path, p.MinFreeBytes)
			add("Free space on the target", boolErr(space.OK, space.Message), space.Message)
		}
	}
	var failed []string
	for _, c := range result.Checks {
		if !c.OK {
			failed = append(failed, c.Name+": "+c.Message)
		}
	}
	if len(failed) > 0 {
		return nil, &agentproto.TaskError{Code: agentproto.CodePrerequisitesFailed, Message: strings.Join(failed, "; ")}
	}
	return result, nil
}

func boolErr(ok bool, msg string) error {
	if ok {
		return nil
	}
	return errors.New(msg)
}

// checkBlobTarget gets a SAS from the vault (which creates the VM's
// container) and lists the container with it.
func (ts *Tasks) checkBlobTarget(ctx context.Context, t agentproto.Task, p agentproto.ReplicationPayload) error {
	r, err := ts.openStore(ctx, t, p, openCreate)
	if err != nil {
		return err
	}
	defer r.Close()
	return r.(interface{ Check() error }).Check()
}

// checkWritable checks that dir is a directory this agent can write in.
// Unless create is set it must exist already: a typo, or a share that is
// not mounted, must not become a directory on the host's own disk.
func checkWritable(dir string, create bool) error {
	if !create {
		st, err := os.Stat(dir)
		switch {
		case errors.Is(err, os.ErrNotExist):
			return fmt.Errorf("does not exist on this host: mount the share or correct the target's path; if the directory should be made here, edit the target and choose \"Create the directory on the hosts\"")
		case err != nil:
			return fmt.Errorf("cannot be read: %w", err)
		case !st.IsDir():
			return fmt.Errorf("is not a directory")
		}
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("cannot be created: %w", err)
	}
	f, err := os.CreateTemp(dir, ".lifeboat-write-test-")
	if err != nil {
		return fmt.Errorf("is not writable: %w", err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// createReplica makes the (empty) replica disks on the target.
func (ts *Tasks) createReplica(ctx context.Context, t agentproto.Task, rep Reporter) (any, error) {
	p, err := replicationPayload(t)
	if err != nil {
		return nil, err
	}
	r, err := ts.openStore(ctx, t, p, openCreate)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	for i, d := range p.Disks {
		rep.Set(agentproto.Progress{Step: "replica of " + filepath.Base(d.Path), Percent: i * 100 / len(p.Disks)})
		if err := r.CreateDisk(d.ReplicaID, d.SizeBytes); err != nil {
			return nil, replicate.TargetError(err)
		}
	}
	if err := describe(r, p); err != nil {
		return nil, replicate.TargetError(err)
	}
	return map[string]int{"disks": len(p.Disks)}, nil
}
