package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/blocks"
	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agent/replicate"
)

// The sparse part: per-cycle cost must not grow with the disk where
// nothing changed. A big sparse disk with little data and little churn;
// one delta cycle is measured by what it costs beside what changed: peak
// memory (directory target) and bytes read from storage (Azure).
//
//	BENCH_SPARSE_GIB        the directory part's disk, GiB (default 64)
//	BENCH_SPARSE_AZURE_GIB  the Azure part's disk, GiB (default 8: Azurite
//	                        is slow to fill)

const (
	sparseData  = 0.01 // of the disk, as random 1 MiB extents
	sparseChurn = 0.01 // of the disk, as random 8 KiB–1 MiB writes
)

// hashArrays is what two whole-disk arrays of 16-byte hashes per 4 KiB
// block take: the memory a cycle would need if it held the source's and
// the replica's hashes at once, the cost this part looks for.
func hashArrays(size int64) int64 { return 2 * blocks.Count(size) * 16 }

func benchSparse(dir string) error {
	gib, err := envInt("BENCH_SPARSE_GIB", 64, 1)
	if err != nil {
		return err
	}
	if err := benchSparseDir(dir, gib<<30); err != nil {
		return err
	}
	azureGiB, err := envInt("BENCH_SPARSE_AZURE_GIB", 8, 1)
	if err != nil {
		return err
	}
	return benchSparseAzure(dir, azureGiB<<30)
}

// benchSparseDir measures the peak memory of cycles to a directory target,
// each in a child process of its own.
func benchSparseDir(dir string, size int64) error {
	src := filepath.Join(dir, "sparse-source.img")
	defer os.Remove(src)
	data, err := makeSparseDisk(src, size, sparseData, 21)
	if err != nil {
		return err
	}
	root := filepath.Join(dir, "sparse-target")
	defer os.RemoveAll(root)
	spec := childSpec{Kind: "dir", Root: root, Source: src}
	if err := createInChild(spec, size); err != nil {
		return err
	}

	fmt.Println()
	fmt.Printf("Sparse disk, directory target: %d GiB, %.0f %% data in random 1 MiB extents (%d MiB), "+
		"then %.0f %% churn by random 8 KiB–1 MiB writes\n", size>>30, sparseData*100, data/mib, sparseChurn*100)
	fmt.Printf("Peak RSS is the child's own (VmHWM); rusage's Maxrss, beside, also holds the bench's RSS when it forked the child.\n")
	fmt.Printf("%-44s %10s %12s %12s %12s %14s %8s  %s\n", "child process", "seconds", "peak RSS MiB", "Maxrss MiB", "changed MiB", "2 hash arr MiB", "ratio", "goal")
	base := spec
	base.OpenOnly = true
	if err := sparseRow("opens the store only (baseline)", base, 0, size, ""); err != nil {
		return err
	}
	if err := sparseRow("initial copy", spec, data, size, ""); err != nil {
		return err
	}
	changed, err := churnExtents(src, size, sparseChurn, 22)
	if err != nil {
		return err
	}
	bitmap := blocks.Count(size) / 8
	return sparseRow("delta cycle", spec, changed, size,
		fmt.Sprintf("≪ 2 hash arrays: ≈ baseline + bitmap (%.1f MiB) + buffers", float64(bitmap)/mib))
}

// sparseRow runs one child and prints its row; ratio is the peak memory
// against the two hash arrays.
//
// The peak is the child's VmHWM, read by the child itself as it ends:
// Linux starts a child's rusage Maxrss at the RSS of the parent that forked
// it (Go forks with vfork, and exec keeps the parent's high-water mark), so
// Maxrss alone would show the bench's own memory, not the cycle's.
func sparseRow(name string, spec childSpec, changed, size int64, goal string) error {
	res, err := runChild(spec)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	arrays := hashArrays(size)
	fmt.Printf("%-44s %10.2f %12.1f %12.1f %12.1f %14.1f %8.3f  %s\n", name, res.Seconds, float64(res.PeakRSS)/mib, float64(res.MaxRSS)/mib,
		float64(changed)/mib, float64(arrays)/mib, float64(res.PeakRSS)/float64(arrays), goal)
	return nil
}

// sparseChildEnv, set, makes the bench a child that runs one cycle
// described by the JSON in it, prints a childResult and exits.
const sparseChildEnv = "BENCH_SPARSE_CHILD"

// childSpec is one cycle for a child process: to a directory (Root) or to
// an Azure container through the counting proxy (AccountURL).
type childSpec struct {
	Kind       string // "dir" or "azure"
	Source     string
	Root       string `json:",omitempty"`
	AccountURL string `json:",omitempty"`
	Container  string `json:",omitempty"`
	CacheDir   string `json:",omitempty"`
	OpenOnly   bool   `json:",omitempty"` // open the store and read the disk's size: the process's floor
	// CreateSize, set, makes the child create the disk, and only that:
	// done once when protection is enabled, not in a cycle, and in a child
	// so that the bench's own RSS stays small (see sparseRow).
	CreateSize int64 `json:",omitempty"`
}

type childResult struct {
	Sent, Differ int64
	Seconds      float64
	PeakRSS      int64 // bytes: the child's VmHWM
	MaxRSS       int64 `json:"-"` // bytes, from the parent's rusage
}

// createInChild creates the disk of spec in a child process.
func createInChild(spec childSpec, size int64) error {
	spec.CreateSize = size
	_, err := runChild(spec)
	return err
}

// runChild re-executes the bench as a child that runs spec, and returns
// what it did with its peak resident memory.
func runChild(spec childSpec) (childResult, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return childResult{}, err
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), sparseChildEnv+"="+string(b))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return childResult{}, fmt.Errorf("child: %v: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	var res childResult
	if err := json.Unmarshal(out, &res); err != nil {
		return childResult{}, fmt.Errorf("child said %q: %w", out, err)
	}
	res.MaxRSS = cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10 // KiB on Linux
	return res, nil
}

// sparseChild is the child's side: one cycle, as an agent's replicate
// task does it (copy, then a point).
func sparseChild() error {
	var spec childSpec
	if err := json.Unmarshal([]byte(os.Getenv(sparseChildEnv)), &spec); err != nil {
		return err
	}
	ctx := context.Background()
	var store replica.Store
	var sync func() error
	switch spec.Kind {
	case "dir":
		r, err := dirtarget.Open(spec.Root, "vm")
		if err != nil {
			return err
		}
		defer r.Close()
		store, sync = r, r.Sync
	case "azure":
		r, err := openAzureChild(ctx, spec)
		if err != nil {
			return err
		}
		defer r.Close()
		store, sync = r, func() error { return nil }
	default:
		return fmt.Errorf("child kind %q", spec.Kind)
	}
	start := time.Now()
	var res replicate.Result
	if spec.CreateSize > 0 {
		if err := store.CreateDisk("d0", spec.CreateSize); err != nil {
			return err
		}
	} else if spec.OpenOnly {
		if _, err := store.DiskSize("d0"); err != nil {
			return err
		}
	} else {
		var err error
		if res, err = replicate.File(ctx, store, "d0", spec.Source, replicate.Options{}); err != nil {
			return err
		}
		if err := sync(); err != nil {
			return err
		}
		if _, err := store.CreatePoint(replica.PointSpec{ID: strconv.FormatInt(time.Now().UnixNano(), 36), Time: time.Now(),
			Consistency: replica.ConsistencyCrash, Disks: []string{"d0"}}); err != nil {
			return err
		}
	}
	took := time.Since(start).Seconds()
	peak, err := peakRSS()
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(childResult{Sent: res.Sent, Differ: res.Differ, Seconds: took, PeakRSS: peak})
}

// peakRSS is this process's resident high-water mark (VmHWM), in bytes.
func peakRSS() (int64, error) { return peakRSSOf("self") }

// peakRSSOf is the VmHWM of a running process ("self" or a pid).
func peakRSSOf(pid string) (int64, error) {
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kib << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%s/status", pid)
}

// makeSparseDisk makes a sparse file of size bytes with a fraction of it
// random data in 1 MiB extents at random 1 MiB offsets, and returns the
// bytes of data.
func makeSparseDisk(path string, size int64, fraction float64, seed uint64) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return 0, err
	}
	rng := rand.New(rand.NewPCG(seed, seed))
	slots := size / mib
	want := max(int64(float64(slots)*fraction), 1)
	used := map[int64]bool{}
	buf := make([]byte, mib)
	for int64(len(used)) < want {
		s := rng.Int64N(slots)
		if used[s] {
			continue
		}
		used[s] = true
		fillNonZero(rng, buf)
		if _, err := f.WriteAt(buf, s*mib); err != nil {
			return 0, err
		}
	}
	return want * mib, f.Sync()
}

// churnExtents writes random extents of 8 KiB to 1 MiB (whole 4 KiB
// blocks) at random block offsets until a fraction of the disk has been
// written, and returns the bytes of distinct blocks they changed.
func churnExtents(path string, size int64, fraction float64, seed uint64) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(seed, seed))
	count := blocks.Count(size)
	touched := make([]uint64, (count+63)/64)
	var changed int64
	buf := make([]byte, mib)
	for written := int64(0); written < int64(float64(size)*fraction); {
		n := 2 + rng.Int64N(255) // blocks: 8 KiB to 1 MiB
		first := rng.Int64N(count - n)
		b := buf[:n*blocks.BlockSize]
		fillNonZero(rng, b)
		if _, err := f.WriteAt(b, first*blocks.BlockSize); err != nil {
			return 0, err
		}
		for i := first; i < first+n; i++ {
			if touched[i/64]&(1<<(i%64)) == 0 {
				touched[i/64] |= 1 << (i % 64)
				changed += blocks.BlockSize
			}
		}
		written += int64(len(b))
	}
	return changed, f.Sync()
}

// fillNonZero fills b with random bytes, none zero, so no block written
// is a zero block (which a fresh replica already holds).
func fillNonZero(rng *rand.Rand, b []byte) {
	for i := 0; i < len(b); i += 8 {
		v := rng.Uint64() | 0x0101010101010101
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
}

// envInt reads a whole number from the environment, def when unset.
func envInt(name string, def, least int64) (int64, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < least {
		return 0, fmt.Errorf("%s %q: give a whole number, at least %d", name, v, least)
	}
	return n, nil
}
