package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/agent/blocks"
	"github.com/lifeboat-dr/lifeboat/agent/dirtarget"
	"github.com/lifeboat-dr/lifeboat/agent/replicate"
)

// benchResync measures a resync against rsync on the same pair of files:
// a disk whose replica is one cycle old, with 1 % of it changed by random
// 4 KiB writes.
func benchResync(dir string, size int64) error {
	if _, err := exec.LookPath("rsync"); err != nil {
		fmt.Println("\nResync against rsync: not measured: rsync is not installed (apt-get install rsync)")
		return nil
	}
	src := filepath.Join(dir, "resync-source.img")
	if err := randomDisk(src, size); err != nil {
		return err
	}
	// rsync's side: a plain copy of the source, as its destination.
	dst := filepath.Join(dir, "resync-rsync-copy.img")
	if _, err := timeCmd("cp", "--sparse=never", src, dst); err != nil {
		return err
	}
	// Lifeboat's side: a replica made by one cycle.
	r, err := dirtarget.Open(filepath.Join(dir, "resync-target"), "vm")
	if err != nil {
		return err
	}
	defer r.Close()
	if err := r.CreateDisk("d0", size); err != nil {
		return err
	}
	if _, err := replicate.File(context.Background(), r, "d0", src, replicate.Options{}); err != nil {
		return err
	}
	if err := r.Sync(); err != nil {
		return err
	}
	changed, err := scatter4K(src, size, 0.01)
	if err != nil {
		return err
	}

	dropCaches()
	start := time.Now()
	out, err := exec.Command("rsync", "--no-whole-file", "--inplace", "--stats", src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("rsync: %v: %s", err, out)
	}
	rsyncTime := time.Since(start)
	sentRsync, recvRsync := rsyncStat(out, "Total bytes sent"), rsyncStat(out, "Total bytes received")

	dropCaches()
	start = time.Now()
	res, err := replicate.File(context.Background(), r, "d0", src, replicate.Options{})
	if err != nil {
		return err
	}
	written := res.Sent
	if err := r.Sync(); err != nil {
		return err
	}
	lifeboatTime := time.Since(start)
	hashesRead := blocks.Count(size) * 16

	fmt.Println()
	fmt.Printf("Resync of a %d MiB disk with 1 %% changed by random 4 KiB writes (%.1f MiB changed)\n", size/mib, float64(changed)/mib)
	fmt.Printf("%-44s %10s %14s %14s %10s  %s\n", "", "seconds", "→ target MiB", "← target MiB", "× change", "goal")
	fmt.Printf("%-44s %10.2f %14.1f %14.1f %10.2f  %s\n", "rsync --no-whole-file --inplace (baseline)", rsyncTime.Seconds(),
		float64(sentRsync)/mib, float64(recvRsync)/mib, float64(sentRsync+recvRsync)/float64(changed), "")
	fmt.Printf("%-44s %10.2f %14.1f %14.1f %10.2f  %s\n", "Lifeboat resync (blocks written, hashes read)", lifeboatTime.Seconds(),
		float64(written)/mib, float64(hashesRead)/mib, float64(written+hashesRead)/float64(changed), "≤ 1.5 × change")
	fmt.Printf("%-44s %10.2f ×%s  %s\n", "  speed against rsync", rsyncTime.Seconds()/lifeboatTime.Seconds(), strings.Repeat(" ", 39), "≥ 4 ×")
	return nil
}

// randomDisk writes size bytes of random data.
func randomDisk(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	rng := rand.NewChaCha8([32]byte{7})
	buf := make([]byte, 4*mib)
	for off := int64(0); off < size; off += int64(len(buf)) {
		rng.Read(buf)
		if _, err := f.WriteAt(buf[:min(int64(len(buf)), size-off)], off); err != nil {
			return err
		}
	}
	return f.Sync()
}

// scatter4K overwrites a fraction of the disk with random 4 KiB blocks at
// random block offsets, and returns the bytes of distinct blocks changed.
func scatter4K(path string, size int64, fraction float64) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(11, 13))
	touched := map[int64]bool{}
	blk := make([]byte, blocks.BlockSize)
	for int64(len(touched))*blocks.BlockSize < int64(float64(size)*fraction) {
		b := rng.Int64N(size / blocks.BlockSize)
		for i := range blk {
			blk[i] = byte(rng.Uint32())
		}
		if _, err := f.WriteAt(blk, b*blocks.BlockSize); err != nil {
			return 0, err
		}
		touched[b] = true
	}
	return int64(len(touched)) * blocks.BlockSize, f.Sync()
}

var statLine = regexp.MustCompile(`(?m)^([A-Za-z ]+): ([0-9,]+)`)

// rsyncStat reads one number of rsync --stats.
func rsyncStat(out []byte, name string) int64 {
	for _, m := range statLine.FindAllSubmatch(out, -1) {
		if string(m[1]) == name {
			n, _ := strconv.ParseInt(strings.ReplaceAll(string(m[2]), ",", ""), 10, 64)
			return n
		}
	}
	return 0
}
