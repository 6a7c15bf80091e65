// Package xfstest mounts a small XFS filesystem from a loop file, for
// tests of reflink captures (FICLONE). It needs root and mkfs.xfs
// (Debian's xfsprogs, which scripts/install-test-deps.sh installs); tests
// skip without them unless LIFEBOAT_REQUIRE_XFS is set, as CI does.
package xfstest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// RequireEnv makes a missing XFS a failure instead of a skip.
const RequireEnv = "LIFEBOAT_REQUIRE_XFS"

// Mount makes an XFS filesystem of sizeMiB in a loop file, mounts it on a
// fresh directory and returns that directory; it is unmounted when the
// test ends.
func Mount(t testing.TB, sizeMiB int) string {
	t.Helper()
	unavailable := func(why string) {
		if os.Getenv(RequireEnv) != "" {
			t.Fatalf("XFS is required (%s is set) but %s", RequireEnv, why)
		}
		t.Skip("no loop-mounted XFS: " + why)
	}
	if os.Geteuid() != 0 {
		unavailable("mounting needs root")
	}
	mkfs, err := exec.LookPath("mkfs.xfs")
	if err != nil {
		unavailable("mkfs.xfs is missing (Debian package xfsprogs)")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "xfs.img")
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(int64(sizeMiB) << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if out, err := exec.Command(mkfs, "-q", "-m", "reflink=1", img).CombinedOutput(); err != nil {
		unavailable("mkfs.xfs failed: " + err.Error() + ": " + string(out))
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		unavailable("mount -o loop failed: " + err.Error() + ": " + string(out))
	}
	t.Cleanup(func() {
		// A file still open (a test that failed half-way) makes the mount
		// busy for a moment.
		for i := 0; i < 50; i++ {
			if exec.Command("umount", mnt).Run() == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		_ = exec.Command("umount", "-l", mnt).Run()
	})
	return mnt
}
