// Command bench measures replication against baselines run in the same
// invocation on the same files, and prints ratios (make bench). It is not
// a test: nothing here passes or fails; the goals are printed beside.
//
//	BENCH_SIZE  disk size in MiB (default 4096; the resync disk is half of it)
//	BENCH_DIR   where to put the files (default the system temp dir)
//	BENCH_ONLY  azure, resync, sparse, rpo, recovery, qemu or vault: run that
//	            part alone (for comparing builds)
//
// The sparse, rpo, recovery and qemu parts have their own sizes (see
// sparse.go, rpo.go, recovery.go, qemu.go); vault is the control plane
// under a simulated fleet of hosts (vaultbench.go) and runs only alone.
package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/blocks"
	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agent/replicate"
)

func main() {
	// A child process of the sparse part runs one delta cycle, so that its
	// peak memory is the cycle's alone.
	if os.Getenv(sparseChildEnv) != "" {
		if err := sparseChild(); err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

const mib = 1 << 20

func run() error {
	sizeMiB := int64(4096)
	if v := os.Getenv("BENCH_SIZE"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 64 {
			return fmt.Errorf("BENCH_SIZE %q: give a size in MiB, at least 64", v)
		}
		sizeMiB = n
	}
	size := sizeMiB * mib
	dir, err := os.MkdirTemp(os.Getenv("BENCH_DIR"), "lifeboat-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// The sparse, rpo, recovery and qemu parts make their own disks.
	switch os.Getenv("BENCH_ONLY") {
	case "sparse":
		return benchSparse(dir)
	case "rpo":
		return benchRPO(dir)
	case "recovery":
		return benchRecovery(dir)
	case "qemu":
		return benchQEMU(dir)
	case "vault":
		return benchVault(dir)
	}
	src := filepath.Join(dir, "source.img")
	fmt.Printf("Making a %d MiB disk with 50 %% data in %s ...\n", sizeMiB, dir)
	if err := makeDisk(src, size); err != nil {
		return err
	}
	switch os.Getenv("BENCH_ONLY") {
	case "":
	case "azure":
		fmt.Printf("%-44s %10s %10s %12s  %s\n", "measurement", "seconds", "MiB/s", "ratio", "goal")
		return benchAzure(dir, src, size)
	case "resync":
		return benchResync(dir, size/2)
	default:
		return fmt.Errorf("BENCH_ONLY %q: give azure, resync, sparse, rpo, recovery, qemu or vault", os.Getenv("BENCH_ONLY"))
	}
	dropped := dropCaches()
	fmt.Printf("Page cache dropped before each measurement: %v\n\n", dropped)
	fmt.Printf("%-44s %10s %10s %12s  %s\n", "measurement", "seconds", "MiB/s", "ratio", "goal")

	// Initial replication to a directory vs a plain dd copy.
	dropCaches()
	ddCopy, err := timeCmd("dd", "if="+src, "of="+filepath.Join(dir, "dd-copy.img"), "bs=4M", "status=none")
	if err != nil {
		return err
	}
	os.Remove(filepath.Join(dir, "dd-copy.img"))
	// dd writes the zeros too; with conv=sparse it skips them, as we do.
	dropCaches()
	ddSparse, err := timeCmd("dd", "if="+src, "of="+filepath.Join(dir, "dd-copy.img"), "bs=4M", "conv=sparse", "status=none")
	if err != nil {
		return err
	}
	os.Remove(filepath.Join(dir, "dd-copy.img"))
	r, err := dirtarget.Open(filepath.Join(dir, "target"), "vm")
	if err != nil {
		return err
	}
	defer r.Close()
	if err := r.CreateDisk("d0", size); err != nil {
		return err
	}
	dropCaches()
	start := time.Now()
	res, err := replicate.File(context.Background(), r, "d0", src, replicate.Options{})
	if err != nil {
		return err
	}
	sent := res.Sent
	if err := r.Sync(); err != nil {
		return err
	}
	initial := time.Since(start)
	if _, err := r.CreatePoint(replica.PointSpec{ID: "p0", Time: time.Now(), Consistency: replica.ConsistencyCrash, Disks: []string{"d0"}}); err != nil {
		return err
	}
	row("dd copy of the disk (baseline)", ddCopy, size, 0, "")
	row("dd copy, conv=sparse (baseline)", ddSparse, size, 0, "")
	row("initial replication to a directory", initial, size, ddCopy.Seconds()/initial.Seconds(), "≥ 0.9 × dd")
	row("  the same against dd conv=sparse", initial, size, ddSparse.Seconds()/initial.Seconds(), "")
	fmt.Printf("%-44s %10s %10s %12s  %s\n", "  bytes sent (zeros skipped)", "", fmt.Sprintf("%d MiB", sent/mib), "", "")

	// Scan (hash) rate vs dd reading the same file.
	dropCaches()
	ddRead, err := timeCmd("dd", "if="+src, "of=/dev/null", "bs=4M", "status=none")
	if err != nil {
		return err
	}
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	dropCaches()
	start = time.Now()
	if _, err := blocks.HashDisk(f, size, replicate.HashWorkers()); err != nil {
		return err
	}
	scan := time.Since(start)
	f.Close()
	row("dd read of the disk (baseline)", ddRead, size, 0, "")
	row("filedisk scan (xxh3 per 4 KiB)", scan, size, ddRead.Seconds()/scan.Seconds(), "≥ 0.8 × dd")

	if err := benchAzure(dir, src, size); err != nil {
		return err
	}

	// Delta cycles: bytes sent must follow the changed data, not the size.
	fmt.Println()
	fmt.Printf("%-44s %10s %14s %16s %8s  %s\n", "delta cycle", "seconds", "sent MiB", "changed 64K MiB", "ratio", "goal")
	for i, churn := range []float64{0.001, 0.01, 0.1} {
		changed64, err := churnDisk(src, size, churn, uint64(i+1))
		if err != nil {
			return err
		}
		dropCaches()
		start := time.Now()
		res, err := replicate.File(context.Background(), r, "d0", src, replicate.Options{})
		if err != nil {
			return err
		}
		sent := res.Sent
		if _, err := r.CreatePoint(replica.PointSpec{ID: fmt.Sprintf("p%d", i+1), Time: time.Now(), Consistency: replica.ConsistencyCrash, Disks: []string{"d0"}}); err != nil {
			return err
		}
		took := time.Since(start)
		fmt.Printf("%-44s %10.2f %14.2f %16.2f %8.2f  %s\n", fmt.Sprintf("%.1f %% churn (random 4 KiB writes)", churn*100),
			took.Seconds(), float64(sent)/mib, float64(changed64)/mib, float64(sent)/float64(changed64), "≤ 1.1 × changed 64K")
	}
	// A disk whose file did not change is not read at all.
	time.Sleep(2100 * time.Millisecond) // file times must be older than the trust delay
	if _, err := replicate.File(context.Background(), r, "d0", src, replicate.Options{}); err != nil {
		return err
	}
	start = time.Now()
	again, err := replicate.File(context.Background(), r, "d0", src, replicate.Options{})
	if err != nil {
		return err
	}
	skipped := again.Skipped
	fmt.Printf("%-44s %10.4f %14s %16s %8s  %s\n", "unchanged disk file", time.Since(start).Seconds(),
		map[bool]string{true: "not read", false: "READ"}[skipped], "0", "", "not read at all")
	if err := benchResync(dir, size/2); err != nil {
		return err
	}
	// The big disks of the last parts need the room the others took.
	os.Remove(src)
	if err := benchSparse(dir); err != nil {
		return err
	}
	if err := benchRPO(dir); err != nil {
		return err
	}
	if err := benchRecovery(dir); err != nil {
		return err
	}
	return benchQEMU(dir)
}

func row(name string, d time.Duration, size int64, ratio float64, goal string) {
	r := ""
	if ratio > 0 {
		r = fmt.Sprintf("%.2f ×", ratio)
	}
	fmt.Printf("%-44s %10.2f %10.0f %12s  %s\n", name, d.Seconds(), float64(size)/mib/d.Seconds(), r, goal)
}

// makeDisk writes a sparse disk whose every other 64 MiB is random data.
func makeDisk(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	rng := rand.NewChaCha8([32]byte{1})
	buf := make([]byte, 4*mib)
	for off := int64(0); off < size; off += 64 * mib {
		if (off/(64*mib))%2 == 1 {
			continue
		}
		for o := off; o < min(off+64*mib, size); o += int64(len(buf)) {
			rng.Read(buf)
			if _, err := f.WriteAt(buf[:min(int64(len(buf)), size-o)], o); err != nil {
				return err
			}
		}
	}
	return f.Sync()
}

// churnDisk writes random 4 KiB blocks over a fraction of the disk and
// returns the bytes of the distinct 64 KiB blocks they touched.
func churnDisk(path string, size int64, fraction float64, seed uint64) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(seed, seed))
	writes := int64(float64(size) * fraction / blocks.BlockSize)
	touched := map[int64]bool{}
	blk := make([]byte, blocks.BlockSize)
	for range writes {
		b := rng.Int64N(size / blocks.BlockSize)
		for i := range blk {
			blk[i] = byte(rng.Uint32() | 1) // never a zero block
		}
		if _, err := f.WriteAt(blk, b*blocks.BlockSize); err != nil {
			return 0, err
		}
		touched[b*blocks.BlockSize/(64<<10)] = true
	}
	return int64(len(touched)) * (64 << 10), f.Sync()
}

func timeCmd(name string, args ...string) (time.Duration, error) {
	start := time.Now()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%s: %v: %s", name, err, bytes.TrimSpace(out))
	}
	return time.Since(start), nil
}

// dropCaches empties the page cache when allowed (root), so each side reads
// from the disk; else both read what the cache holds.
func dropCaches() bool {
	exec.Command("sync").Run()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0) == nil
}
