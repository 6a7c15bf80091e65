package replicate

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// File copies a disk image file as it is now: a live read, for tools,
// tests and the bench. Agents read through their driver's capture.
func File(ctx context.Context, r replica.Store, replicaID, path string, opts Options) (Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return Result{}, &agentproto.TaskError{Code: agentproto.CodeDiskUnreadable, Message: fmt.Sprintf("source disk %s: %v", path, err)}
	}
	defer f.Close()
	lookedAt := time.Now()
	fi, err := f.Stat()
	if err != nil {
		return Result{}, err
	}
	before := replica.FileSignature(fi)
	src := Source{Name: path, Reader: f, Size: fi.Size(), Signature: before,
		Unchanged: func() bool { return replica.FileUnchanged(path, before, lookedAt) }}
	return Copy(ctx, r, replicaID, src, opts)
}
