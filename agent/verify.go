package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agent/replicate"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// verifyCommand checks a recovery point in a directory target, block by
// block against the hashes recorded when it was written:
// lifeboat-agent verify --target-dir DIR --vm VM-ID [--point ID].
func verifyCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("target-dir", "", "the directory target's path")
	vm := fs.String("vm", "", "the VM's id on its host (the directory name under the target)")
	point := fs.String("point", "", "the recovery point's id; default the newest")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *vm == "" {
		return errors.New("verify needs --target-dir and --vm")
	}
	res, err := verifyPoint(*dir, *vm, *point)
	if err != nil {
		return err
	}
	for _, m := range res.Mismatches {
		fmt.Fprintf(stdout, "MISMATCH disk %s offset %d\n", m.Disk, m.Offset)
	}
	fmt.Fprintf(stdout, "Recovery point %s: %d blocks checked, %d mismatched.\n", res.PointID, res.BlocksChecked, len(res.Mismatches))
	if len(res.Mismatches) > 0 {
		return fmt.Errorf("recovery point %s does not match its recorded hashes; resynchronize the VM", res.PointID)
	}
	return nil
}

func verifyPoint(dir, vm, pointID string) (*agentproto.VerifyResult, error) {
	r, err := dirtarget.OpenExisting(dir, vm)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if pointID == "" {
		points, err := r.Points()
		if err != nil {
			return nil, err
		}
		if len(points) == 0 {
			return nil, fmt.Errorf("VM %s has no recovery point in %s", vm, dir)
		}
		pointID = points[len(points)-1].ID
	}
	return verifyStore(r, pointID)
}

// verifyStore checks one point of a store.
func verifyStore(r replica.Store, pointID string) (*agentproto.VerifyResult, error) {
	n, bad, err := r.VerifyPoint(pointID)
	if err != nil {
		return nil, err
	}
	res := &agentproto.VerifyResult{PointID: pointID, BlocksChecked: n, Mismatches: []agentproto.Mismatch{}}
	for _, m := range bad {
		res.Mismatches = append(res.Mismatches, agentproto.Mismatch{Disk: m.Disk, Offset: m.Offset})
	}
	return res, nil
}

// verifyTask runs verify for the vault.
func (a *agent) verifyTask(ctx context.Context, t agentproto.Task, rep *reporter) (any, error) {
	p, err := replicationPayload(t)
	if err != nil {
		return nil, err
	}
	rep.set(agentproto.Progress{Step: "verify " + p.PointID, Percent: 0})
	r, err := a.openStore(ctx, t, p, false)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	res, err := verifyStore(r, p.PointID)
	if err != nil {
		return nil, replicate.TargetError(err)
	}
	b, _ := json.Marshal(res)
	return json.RawMessage(b), nil
}
