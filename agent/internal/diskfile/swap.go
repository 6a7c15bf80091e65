package diskfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// SwapIn puts the written VM directory tmp in place at final. A VM it
// replaces is exchanged with it in one step (RENAME_EXCHANGE), so a crash
// leaves one of the two whole under the VM's name, and the old one in tmp
// for the caller to remove. A filesystem without exchange gets two
// renames by way of old (a hidden name beside them): a crash between them
// leaves both hidden, for the driver's start-up sweep to remove, and the
// materialize, run again, writes the VM anew. Without a VM to replace it
// is a plain rename, which fails rather than replace a directory that
// appeared meanwhile.
func SwapIn(tmp, final, old string, replacing bool) error {
	if !replacing {
		if err := os.Rename(tmp, final); err != nil {
			return fmt.Errorf("put the new VM in place at %s: %w", final, err)
		}
		return nil
	}
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, final, unix.RENAME_EXCHANGE)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("put the new VM in place of %s: %w", final, err)
	}
	if err := os.Rename(final, old); err != nil {
		return err
	}
	defer os.RemoveAll(old)
	return os.Rename(tmp, final)
}

// HiddenDir makes a new hidden directory root/prefix+NONCE for a VM being
// written, and returns it with its nonce (SwapIn's old name uses it too).
func HiddenDir(root, prefix string) (dir, nonce string, err error) {
	nonce = Nonce()
	dir = filepath.Join(root, prefix+nonce)
	return dir, nonce, os.Mkdir(dir, 0o750)
}

// Nonce names one hidden work directory: random, short.
func Nonce() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Prefixed puts what was not done before an error, keeping the code of a
// *agentproto.TaskError (which the runner reports on its own, without
// the words wrapped around it).
func Prefixed(prefix string, err error) error {
	var te *agentproto.TaskError
	if errors.As(err, &te) {
		return &agentproto.TaskError{Code: te.Code, Message: prefix + ": " + te.Message, Recoverable: te.Recoverable}
	}
	return fmt.Errorf("%s: %w", prefix, err)
}
