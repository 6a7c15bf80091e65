package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/blobtarget"
	"github.com/lifeboat-dr/lifeboat/agent/tasks"
)

// verifyCommand checks a recovery point, block by block against the
// hashes recorded when it was written, on a directory target or in an
// Azure Blob container:
//
//	lifeboat-agent verify --target-dir DIR --vm VM-ID [--point ID]
//	lifeboat-agent verify --container-url URL --vm VM-ID [--point ID]   (SAS in LIFEBOAT_AZURE_SAS)
func verifyCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("target-dir", "", "a directory target's path")
	containerURL := fs.String("container-url", "", "an Azure Blob target: the VM's container URL (https://ACCOUNT.blob.core.windows.net/PREFIX-VMID); a SAS that may read and list it goes in LIFEBOAT_AZURE_SAS")
	vm := fs.String("vm", "", "the VM's id in the vault (vm_…, as the portal and the API show it; the directory name under the target)")
	point := fs.String("point", "", "the recovery point's id; default the newest")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*dir == "") == (*containerURL == "") || *vm == "" {
		return errors.New("verify needs --vm and one of --target-dir or --container-url")
	}
	r, where, err := openReplicaStore(ctx, *dir, *containerURL, *vm, getenv)
	if err != nil {
		return err
	}
	defer r.Close()
	pt, err := choosePoint(r, *vm, where, *point)
	if err != nil {
		return err
	}
	res, err := tasks.VerifyStore(r, pt.ID)
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

// givenSAS is a SAS an operator gave, used for the container and its
// snapshots alike.
type givenSAS struct{ url, token string }

func (g givenSAS) ContainerSAS(context.Context) (blobtarget.SAS, error) {
	return blobtarget.SAS{ContainerURL: g.url, Token: g.token, Expires: time.Now().Add(24 * time.Hour)}, nil
}

func (g givenSAS) SnapshotSAS(ctx context.Context, _, _ string) (blobtarget.SAS, error) {
	return g.ContainerSAS(ctx)
}
