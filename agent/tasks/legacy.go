package tasks

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// moveLegacyReplica moves a VM's replica directory from the name an
// earlier version kept it under (the host-local VM id) to its key (the
// vault's VM id), so that VMs of one name on two hosts never share one.
// The vault sends a legacy key only where it knows the old directory
// belongs to this VM alone; it forgets it once a task succeeded. A rename
// within the target directory is atomic: after a crash the replica is
// under one name or the other, and the next task finishes the move.
func moveLegacyReplica(root, legacy, key string) error {
	if legacy == "" || legacy == key {
		return nil
	}
	if !simpleName(legacy) || !simpleName(key) {
		return &agentproto.TaskError{Code: agentproto.CodeInvalidPayload, Message: fmt.Sprintf(
			"replica names %q and %q must be single path elements; upgrade the vault and the agent to one version", legacy, key)}
	}
	from, to := filepath.Join(root, legacy), filepath.Join(root, key)
	if _, err := os.Lstat(to); err == nil {
		return nil // moved already; a directory left under the old name is not ours to touch
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	fi, err := os.Lstat(from)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // nothing to move: a fresh replica is made under the key
	} else if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s, where this VM's replica was kept before, is not a directory; move it away, then run the job again", from)
	}
	if err := os.Rename(from, to); err != nil {
		return fmt.Errorf("move the replica %s to %s: %w", from, to, err)
	}
	return syncDir(root)
}

func simpleName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, `/\`)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
