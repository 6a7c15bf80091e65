package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/pageblob"

	"github.com/lifeboat-dr/lifeboat/agent/blobtarget"
	"github.com/lifeboat-dr/lifeboat/agent/blobtarget/azuritetest"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agent/replicate"
)

// concurrency is the requests in flight, the same for both sides.
const concurrency = 8

// benchAzure measures initial replication to Azure Blob storage (Azurite)
// against plain azblob uploads of the same file, in the same run.
func benchAzure(dir, src string, size int64) error {
	if _, err := azuritetest.Binary(); err != nil {
		fmt.Printf("\nAzure Blob (Azurite): not measured: %v; run make test-deps\n", err)
		return nil
	}
	az, err := azuritetest.Launch(filepath.Join(dir, "azurite"))
	if err != nil {
		return err
	}
	defer az.Stop()
	ctx := context.Background()
	cred, err := container.NewSharedKeyCredential(azuritetest.Account, azuritetest.Key)
	if err != nil {
		return err
	}
	newContainer := func(name string) (*container.Client, error) {
		c, err := container.NewClientWithSharedKeyCredential(az.AccountURL()+"/"+name, cred, nil)
		if err != nil {
			return nil, err
		}
		_, err = c.Create(ctx, nil)
		return c, err
	}
	base, err := newContainer("baseline")
	if err != nil {
		return err
	}

	// Baseline 1: the SDK's own file upload (a block blob, zeros included).
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	dropCaches()
	start := time.Now()
	if _, err := base.NewBlockBlobClient("upload").UploadFile(ctx, f, &blockblob.UploadFileOptions{BlockSize: 4 << 20, Concurrency: concurrency}); err != nil {
		return fmt.Errorf("baseline upload: %w", err)
	}
	upload := time.Since(start)

	// Baseline 2: the same bytes Lifeboat sends: a page blob of the disk's
	// size, every 4 MiB that is not all zeros written as one page write.
	pb := base.NewPageBlobClient("pages")
	if _, err := pb.Create(ctx, (size+511)/512*512, nil); err != nil {
		return err
	}
	dropCaches()
	start = time.Now()
	var sentPlain int64
	if sentPlain, err = uploadNonZeroPages(ctx, pb, f, size); err != nil {
		return fmt.Errorf("baseline page upload: %w", err)
	}
	pages := time.Since(start)

	// Lifeboat: initial replication through a SAS, as an agent does.
	if _, err := newContainer("lifeboat-vm"); err != nil {
		return err
	}
	store, err := blobtarget.Open(ctx, "vm", &azuritetest.KeyCredentials{AccountURL: az.AccountURL(), Container: "lifeboat-vm", Key: azuritetest.Key},
		blobtarget.Options{Concurrency: concurrency})
	if err != nil {
		return err
	}
	if err := store.CreateDisk("d0", size); err != nil {
		return err
	}
	dropCaches()
	start = time.Now()
	res, err := replicate.File(ctx, store, "d0", src, replicate.Options{})
	if err != nil {
		return err
	}
	sent := res.Sent
	if _, err := store.CreatePoint(replica.PointSpec{ID: "p0", Time: time.Now(), Consistency: replica.ConsistencyCrash, Disks: []string{"d0"}}); err != nil {
		return err
	}
	initial := time.Since(start)

	fmt.Println()
	fmt.Printf("%-44s %10s %10s %12s  %s\n", "Azure Blob (Azurite, loopback)", "seconds", "MiB/s", "ratio", "goal")
	row("azblob UploadFile, whole file (baseline)", upload, size, 0, "")
	row("azblob page writes of the data (baseline)", pages, size, 0, "")
	row("initial replication to Azure", initial, size, pages.Seconds()/initial.Seconds(), "≥ 0.9 × page writes")
	row("  the same against UploadFile", initial, size, upload.Seconds()/initial.Seconds(), "")
	fmt.Printf("%-44s %10s %10s %12s  %s\n", "  bytes sent: Lifeboat / baseline pages", "", fmt.Sprintf("%d MiB", sent/mib), fmt.Sprintf("%d MiB", sentPlain/mib), "")
	return nil
}

// uploadNonZeroPages writes each 4 MiB of the file that holds data, with
// concurrency page writes in flight, and returns the bytes written: the
// plain way to send a sparse disk with azblob.
func uploadNonZeroPages(ctx context.Context, pb *pageblob.Client, f *os.File, size int64) (int64, error) {
	const chunk = 4 << 20
	offs := make(chan int64)
	var mu sync.Mutex
	var sent int64
	var first error
	var wg sync.WaitGroup
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, chunk)
			for off := range offs {
				n := min(int64(chunk), size-off)
				b := buf[:n]
				_, err := f.ReadAt(b, off)
				if err == nil && !allZero(b) {
					b = buf[:(n+511)/512*512]
					_, err = pb.UploadPages(ctx, streaming.NopCloser(bytes.NewReader(b)), blob.HTTPRange{Offset: off, Count: int64(len(b))}, nil)
					mu.Lock()
					sent += int64(len(b))
					mu.Unlock()
				}
				if err != nil {
					mu.Lock()
					first = errors.Join(first, err)
					mu.Unlock()
				}
			}
		}()
	}
	for off := int64(0); off < size; off += chunk {
		offs <- off
	}
	close(offs)
	wg.Wait()
	return sent, first
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
