package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// The rpo part: one host keeps every VM's RPO. Many filedisk VMs on one
// agent process, each written to all the time, protected by one policy to
// a directory target; the vault's RPO of every VM is sampled while they
// run, and its p50 and p99 printed against the copy frequency.
//
//	BENCH_RPO_VMS      VMs on the host (default 20)
//	BENCH_RPO_MIB      each VM's disk, MiB (default 256, half data)
//	BENCH_RPO_SECONDS  how long to sample once all are Protected (default 240)

const (
	rpoCopyFrequency = 30 * time.Second
	rpoWriteRate     = 2_000_000 // bytes per second per VM
	rpoWriteSize     = 8 << 10
	rpoSampleEvery   = 2 * time.Second
)

func benchRPO(dir string) error {
	vms, err := envInt("BENCH_RPO_VMS", 20, 1)
	if err != nil {
		return err
	}
	diskMiB, err := envInt("BENCH_RPO_MIB", 256, 16)
	if err != nil {
		return err
	}
	seconds, err := envInt("BENCH_RPO_SECONDS", 240, 10)
	if err != nil {
		return err
	}
	root := filepath.Join(dir, "rpo")
	defer os.RemoveAll(root)
	for _, sub := range []string{"bin", "vault", "agent", "vms", "target"} {
		if err := os.MkdirAll(filepath.Join(root, sub), 0o755); err != nil {
			return err
		}
	}
	fmt.Printf("\nRPO of %d VMs of %d MiB on one agent, each written at %.0f MB/s in random %d KiB writes, copy frequency %s, directory target\n",
		vms, diskMiB, float64(rpoWriteRate)/1e6, rpoWriteSize>>10, rpoCopyFrequency)
	vaultBin, agentBin, err := buildBinaries(filepath.Join(root, "bin"))
	if err != nil {
		return err
	}
	disks := make([]string, vms)
	for i := range disks {
		vmDir := filepath.Join(root, "vms", fmt.Sprintf("vm%d", i))
		disks[i] = filepath.Join(vmDir, "disk0.img")
		if err := os.MkdirAll(vmDir, 0o755); err != nil {
			return err
		}
		if err := makeDisk(disks[i], diskMiB*mib); err != nil {
			return err
		}
		// A running VM: its points are read live, as a busy host's are.
		if err := os.WriteFile(filepath.Join(vmDir, "running"), nil, 0o644); err != nil {
			return err
		}
	}

	v, err := startVault(vaultBin, filepath.Join(root, "vault"), filepath.Join(root, "vault.log"))
	if err != nil {
		return err
	}
	defer v.stop()
	if err := registerAgent(v, agentBin, filepath.Join(root, "agent"), filepath.Join(root, "key.json")); err != nil {
		return err
	}
	agent, err := startProc(filepath.Join(root, "agent.log"), agentBin, "run", "--state-dir", filepath.Join(root, "agent"),
		"--vm-root", filepath.Join(root, "vms"), "--log-level", "warn")
	if err != nil {
		return err
	}
	defer agent.stop()
	fail := func(err error) error {
		return fmt.Errorf("%w\nagent log:\n%s\nvault log:\n%s", err, agent.tail(), v.tail())
	}

	listed, err := waitVMs(v, int(vms), 60*time.Second, func(vm benchVM) bool { return true })
	if err != nil {
		return fail(err)
	}
	protectStart := time.Now()
	if err := protectAll(v, listed, filepath.Join(root, "target")); err != nil {
		return fail(err)
	}
	if _, err := waitVMs(v, int(vms), 30*time.Minute, func(vm benchVM) bool { return vm.ProtectionState == "Protected" }); err != nil {
		return fail(err)
	}
	fmt.Printf("All %d VMs Protected %.0f s after protection was enabled; writing and sampling for %d s ...\n",
		vms, time.Since(protectStart).Seconds(), seconds)

	// The VMs write from now on: the RPO measured is that of cycles, not
	// of the initial copies.
	ctx, stopWriters := context.WithCancel(context.Background())
	var writers sync.WaitGroup
	writeErrs := make([]error, len(disks))
	for i, disk := range disks {
		writers.Add(1)
		go func() {
			defer writers.Done()
			writeErrs[i] = writeSteadily(ctx, disk, diskMiB*mib, uint64(i))
		}()
	}
	agentCPUStart := time.Now()
	samples, final, err := sampleRPO(v, time.Duration(seconds)*time.Second)
	stopWriters()
	writers.Wait()
	if err != nil {
		return fail(err)
	}
	for i, err := range writeErrs {
		if err != nil {
			return fmt.Errorf("writer of vm%d: %w", i, err)
		}
	}
	window := time.Since(agentCPUStart)
	// Read before it ends: its rusage Maxrss would start at the bench's RSS.
	agentPeak, _ := peakRSSOf(strconv.Itoa(agent.cmd.Process.Pid))
	agent.stop()
	printRPO(samples, final, window, agent, agentPeak)
	return nil
}

// waitVMs polls the vault until n VMs are listed that all satisfy ok.
func waitVMs(v *vaultProc, n int, within time.Duration, ok func(benchVM) bool) ([]benchVM, error) {
	deadline := time.Now().Add(within)
	for {
		vms, err := v.listVMs()
		if err != nil {
			return nil, err
		}
		good := 0
		for _, vm := range vms {
			if ok(vm) {
				good++
			}
		}
		if len(vms) == n && good == n {
			return vms, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d of %d VMs as wanted after %s: %+v", good, n, within, vms)
		}
		time.Sleep(time.Second)
	}
}

// protectAll makes the policy and the directory target, and enables
// protection of every VM with them.
func protectAll(v *vaultProc, vms []benchVM, targetDir string) error {
	var policy, target struct{ ID string }
	if err := v.call(http.MethodPost, "/api/v1/policies", map[string]any{"name": "bench", "copy_frequency_seconds": int(rpoCopyFrequency.Seconds()),
		"retention_hours": 24, "app_consistent_frequency_hours": 0}, &policy); err != nil {
		return err
	}
	if err := v.call(http.MethodPost, "/api/v1/targets", map[string]string{"name": "bench", "kind": "directory", "path": targetDir}, &target); err != nil {
		return err
	}
	for _, vm := range vms {
		if err := v.call(http.MethodPost, "/api/v1/vms/"+vm.ID+"/protection", map[string]string{"policy_id": policy.ID, "target_id": target.ID}, nil); err != nil {
			return fmt.Errorf("enable protection of %s: %w", vm.Name, err)
		}
	}
	return nil
}

// writeSteadily writes random 8 KiB blocks at random 8 KiB offsets of the
// disk, in place, at rpoWriteRate on average, until ctx ends.
func writeSteadily(ctx context.Context, path string, size int64, seed uint64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(seed, 99))
	buf := make([]byte, rpoWriteSize)
	slots := size / rpoWriteSize
	start := time.Now()
	var written int64
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		// Catch up to the rate: late ticks write more, not less.
		for due := int64(time.Since(start).Seconds() * rpoWriteRate); written+rpoWriteSize <= due; written += rpoWriteSize {
			fillNonZero(rng, buf)
			if _, err := f.WriteAt(buf, rng.Int64N(slots)*rpoWriteSize); err != nil {
				return err
			}
		}
	}
}

// sampleRPO reads every VM's RPO every rpoSampleEvery for d, and returns
// the samples (seconds) and the VMs as they were at the end.
func sampleRPO(v *vaultProc, d time.Duration) ([]int64, []benchVM, error) {
	var samples []int64
	var last []benchVM
	tick := time.NewTicker(rpoSampleEvery)
	defer tick.Stop()
	for end := time.Now().Add(d); time.Now().Before(end); <-tick.C {
		vms, err := v.listVMs()
		if err != nil {
			return nil, nil, err
		}
		for _, vm := range vms {
			if vm.RPOSeconds != nil {
				samples = append(samples, *vm.RPOSeconds)
			}
		}
		last = vms
	}
	return samples, last, nil
}

func printRPO(samples []int64, final []benchVM, window time.Duration, agent *proc, agentPeak int64) {
	slices.Sort(samples)
	pct := func(p float64) int64 {
		if len(samples) == 0 {
			return -1
		}
		return samples[min(int(p*float64(len(samples))), len(samples)-1)]
	}
	resync := 0
	var cycle []float64
	for _, vm := range final {
		if vm.ProtectionState == "ResyncRequired" {
			resync++
		}
		if vm.LastCycle != nil {
			cycle = append(cycle, vm.LastCycle.Seconds)
		}
	}
	slices.Sort(cycle)
	freq := int64(rpoCopyFrequency.Seconds())
	fmt.Printf("%-44s %10s %10s %10s  %s\n", fmt.Sprintf("sampled for %.0f s", window.Seconds()), "seconds", "× freq", "samples", "goal")
	fmt.Printf("%-44s %10d %10s %10s  %s\n", "copy frequency (baseline)", freq, "1.00", "", "")
	fmt.Printf("%-44s %10d %10.2f %10d  %s\n", "RPO p50, every VM every 2 s", pct(0.50), float64(pct(0.50))/float64(freq), len(samples), "")
	fmt.Printf("%-44s %10d %10.2f %10s  %s\n", "RPO p99", pct(0.99), float64(pct(0.99))/float64(freq), "", "≤ 2 × copy frequency (60 s)")
	fmt.Printf("%-44s %10d %10.2f %10s  %s\n", "RPO max", pct(1), float64(pct(1))/float64(freq), "", "")
	if len(cycle) > 0 {
		fmt.Printf("%-44s %10.1f %10s %10s  %s\n", "last cycle's duration, median over VMs", cycle[len(cycle)/2], "", "", "")
	}
	fmt.Printf("%-44s %10s %10s %10d  %s\n", "VMs ResyncRequired at the end", "", "", resync, "0")
	if st := agent.cmd.ProcessState; st != nil {
		ru := st.SysUsage().(*syscall.Rusage)
		cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		fmt.Printf("%-44s %10.1f %10s %10s  %s\n", "agent CPU seconds (whole run, with initial)", cpu.Seconds(), "", "", "")
	}
	fmt.Printf("%-44s %10s %10s %10s  %s\n", "agent peak RSS (VmHWM)", fmt.Sprintf("%d MiB", agentPeak/mib), "", "", "")
}
