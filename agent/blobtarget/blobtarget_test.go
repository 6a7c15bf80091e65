package blobtarget_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/lifeboat-dr/lifeboat/agent/blobtarget"
	"github.com/lifeboat-dr/lifeboat/agent/blobtarget/azuritetest"
	"github.com/lifeboat-dr/lifeboat/agent/blocks"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agent/replica/replicatest"
	"github.com/lifeboat-dr/lifeboat/agent/replicate"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// env is one Azurite, one VM container in it, and a store on that
// container reached with a container SAS, as the vault issues them.
type env struct {
	az    *azuritetest.Server
	admin *container.Client // with the account key: for the test's own looks
	store *blobtarget.Replica
}

func newEnv(t *testing.T, key string) *env {
	t.Helper()
	e := &env{az: azuritetest.Start(t)}
	cred, err := container.NewSharedKeyCredential(azuritetest.Account, azuritetest.Key)
	if err != nil {
		t.Fatal(err)
	}
	url := e.az.AccountURL() + "/vm-test"
	e.admin, err = container.NewClientWithSharedKeyCredential(url, cred, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.Create(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	e.store = e.open(t, key)
	return e
}

func (e *env) open(t *testing.T, key string) *blobtarget.Replica {
	t.Helper()
	creds := &azuritetest.KeyCredentials{AccountURL: e.az.AccountURL(), Container: "vm-test", Key: key}
	// With a hash cache: every test also checks it stays the blob's.
	s, err := blobtarget.Open(context.Background(), "vm", creds, blobtarget.Options{CacheDir: t.TempDir(),
		Retry: policy.RetryOptions{MaxRetries: 1, RetryDelay: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// sourceDisk is a raw disk file with random writes.
type sourceDisk struct {
	id, path string
	size     int64
}

func newSource(t *testing.T, id string, size int64) sourceDisk {
	t.Helper()
	d := sourceDisk{id, filepath.Join(t.TempDir(), id+".img"), size}
	if err := os.WriteFile(d.path, make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

// scribble writes n random runs of 1 byte to 64 KiB at random offsets.
func (d sourceDisk) scribble(t *testing.T, rng *rand.Rand, n int) {
	t.Helper()
	f, err := os.OpenFile(d.path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for range n {
		b := make([]byte, 1+rng.IntN(64<<10))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		off := rng.Int64N(d.size - int64(len(b)) + 1)
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
}

func (d sourceDisk) content(t *testing.T) []byte {
	b, err := os.ReadFile(d.path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func cycle(t *testing.T, s replica.Store, disks []sourceDisk) int64 {
	t.Helper()
	var sent int64
	for _, d := range disks {
		res, err := replicate.File(context.Background(), s, d.id, d.path, replicate.Options{})
		if err != nil {
			t.Fatalf("replicate %s: %v", d.id, err)
		}
		sent += res.Sent
	}
	return sent
}

func TestEveryRecoveryPointReadsBackAsTheSourceAtItsCapture(t *testing.T) {
	e := newEnv(t, azuritetest.Key)
	// Two disks; the second's size is not a whole number of blocks.
	disks := []sourceDisk{newSource(t, "os", 6<<20), newSource(t, "data", 3<<20+1000)}
	for _, d := range disks {
		if err := e.store.CreateDisk(d.id, d.size); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	want := map[string]map[string][]byte{} // point → disk → content
	for c := range 6 {
		for _, d := range disks {
			d.scribble(t, rng, 1+rng.IntN(40))
		}
		cycle(t, e.store, disks)
		id := "p" + string(rune('a'+c))
		want[id] = map[string][]byte{}
		for _, d := range disks {
			want[id][d.id] = d.content(t)
		}
		if _, err := replicatest.Point(e.store, id, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	points, err := e.store.Points()
	if err != nil || len(points) != 6 {
		t.Fatalf("points %v, %v", points, err)
	}
	for i, p := range points {
		if p.Seq != i+1 || p.Disks["data"] != 3<<20+1000 {
			t.Fatalf("point %d: %+v", i, p)
		}
		for _, d := range disks {
			if got := replicatest.ReadPoint(t, e.store, p.ID, d.id); !bytes.Equal(got, want[p.ID][d.id]) {
				t.Fatalf("point %s disk %s differs from the source at its capture", p.ID, d.id)
			}
		}
		n, bad, err := e.store.VerifyPoint(p.ID)
		if err != nil || len(bad) != 0 || n != blocks.Count(6<<20)+blocks.Count(3<<20+1000) {
			t.Fatalf("verify %s: %d blocks, %v, %v", p.ID, n, bad, err)
		}
	}
	// Creating a point again with the same id (a retried task) changes nothing.
	again, err := replicatest.Point(e.store, "pc", time.Now())
	if err != nil || again.Seq != 3 {
		t.Fatalf("retried point: %+v, %v", again, err)
	}
	// Retention: oldest first, never the newest.
	if err := e.store.DeletePoint("pb"); err == nil {
		t.Fatal("a point that is not the oldest was deleted")
	}
	if err := e.store.DeletePoint("pf"); err == nil {
		t.Fatal("the newest point was deleted")
	}
	for _, id := range []string{"pa", "pb"} {
		if err := e.store.DeletePoint(id); err != nil {
			t.Fatal(err)
		}
	}
	points, _ = e.store.Points()
	if len(points) != 4 || points[0].ID != "pc" {
		t.Fatalf("after pruning: %+v", points)
	}
	// The deleted points' snapshots are gone too: 4 points × 2 disks × 2 blobs.
	snaps := 0
	pager := e.admin.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Include: container.ListBlobsInclude{Snapshots: true}})
	for pager.More() {
		page, err := pager.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range page.Segment.BlobItems {
			if b.Snapshot != nil && *b.Snapshot != "" {
				snaps++
			}
		}
	}
	if snaps != 16 {
		t.Fatalf("%d snapshots left, want 16", snaps)
	}
	if got := replicatest.ReadPoint(t, e.store, "pc", "os"); !bytes.Equal(got, want["pc"]["os"]) {
		t.Fatal("pruning changed a kept point")
	}
}

func TestASparseDiskSendsOnlyItsData(t *testing.T) {
	e := newEnv(t, azuritetest.Key)
	d := newSource(t, "d", 64<<20)
	f, _ := os.OpenFile(d.path, os.O_WRONLY, 0)
	data := bytes.Repeat([]byte("lifeboat"), (3<<20)/8)
	f.WriteAt(data, 20<<20)
	f.Close()
	e.store.CreateDisk("d", d.size)
	if sent := cycle(t, e.store, []sourceDisk{d}); sent != 3<<20 {
		t.Fatalf("sent %d bytes for 3 MiB of data in a 64 MiB disk", sent)
	}
	if sent := cycle(t, e.store, []sourceDisk{d}); sent != 0 {
		t.Fatalf("an unchanged disk sent %d bytes", sent)
	}
}

func TestTheReplicaIsAFixedVHDThatQemuReadsAsTheSource(t *testing.T) {
	qemu, err := exec.LookPath("qemu-img")
	if err != nil {
		if os.Getenv("LIFEBOAT_REQUIRE_QEMU") != "" {
			t.Fatal("qemu-img is not installed and LIFEBOAT_REQUIRE_QEMU is set; run make test-deps")
		}
		t.Skip("qemu-img is not installed; make test-deps installs it")
	}
	e := newEnv(t, azuritetest.Key)
	d := newSource(t, "d", 5<<20+4096*3)
	d.scribble(t, rand.New(rand.NewPCG(3, 4)), 30)
	e.store.CreateDisk("d", d.size)
	cycle(t, e.store, []sourceDisk{d})
	if _, err := replicatest.Point(e.store, "p1", time.Now()); err != nil {
		t.Fatal(err)
	}
	check := func() {
		t.Helper()
		// Download the page blob as it is stored, footer included.
		out := filepath.Join(t.TempDir(), "replica.vhd")
		f, _ := os.Create(out)
		if _, err := e.admin.NewBlobClient("disks/d.vhd").DownloadFile(context.Background(), f, nil); err != nil {
			t.Fatal(err)
		}
		f.Close()
		info, err := exec.Command(qemu, "info", "-f", "vpc", out).CombinedOutput()
		if err != nil || !strings.Contains(string(info), "file format: vpc") {
			t.Fatalf("qemu-img info: %v\n%s", err, info)
		}
		// The VHD's data is the source rounded up to a MiB with zeros;
		// compare accepts the larger image when its extra part is zeros.
		if cmp, err := exec.Command(qemu, "compare", "-f", "vpc", "-F", "raw", out, d.path).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img compare: %v\n%s", err, cmp)
		}
	}
	check()
	// The source grows past its MiB: the replica grows, footer and all.
	f, _ := os.OpenFile(d.path, os.O_WRONLY, 0)
	f.WriteAt(bytes.Repeat([]byte{0x42}, 8192), d.size+(3<<19))
	f.Close()
	fi, _ := os.Stat(d.path)
	if _, err := replicate.File(context.Background(), e.store, "d", d.path, replicate.Options{}); err != nil {
		t.Fatal(err)
	}
	d.size = fi.Size()
	check()
}

func TestAStorageOutageFailsTheCycleRecoverablyAndLosesNoChange(t *testing.T) {
	e := newEnv(t, azuritetest.Key)
	d := newSource(t, "d", 8<<20)
	rng := rand.New(rand.NewPCG(5, 6))
	d.scribble(t, rng, 20)
	e.store.CreateDisk("d", d.size)
	cycle(t, e.store, []sourceDisk{d})
	replicatest.Point(e.store, "p1", time.Now())

	e.az.Stop()
	for range 3 {
		d.scribble(t, rng, 20)
		_, err := replicate.File(context.Background(), e.store, "d", d.path, replicate.Options{})
		var te *agentproto.TaskError
		if !errors.As(err, &te) || !te.Recoverable {
			t.Fatalf("with the storage down: %v, want a recoverable task error", err)
		}
		if strings.Contains(te.Message, "sig=") && !strings.Contains(te.Message, "sig=REDACTED") {
			t.Fatalf("the error shows the SAS signature: %s", te.Message)
		}
	}
	e.az.Restart()
	d.scribble(t, rng, 5)
	cycle(t, e.store, []sourceDisk{d})
	if _, err := replicatest.Point(e.store, "p2", time.Now()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(replicatest.ReadPoint(t, e.store, "p2", "d"), d.content(t)) {
		t.Fatal("after the outage the point misses changes")
	}
}

func TestResyncFindsAndResendsExactlyTheCorruptedBlocks(t *testing.T) {
	e := newEnv(t, azuritetest.Key)
	d := newSource(t, "d", 16<<20)
	d.scribble(t, rand.New(rand.NewPCG(7, 8)), 100)
	e.store.CreateDisk("d", d.size)
	cycle(t, e.store, []sourceDisk{d})
	// The storage changes three blocks behind our back.
	corrupt := []int64{0, 5 << 20, 16<<20 - 4096}
	pb := e.admin.NewPageBlobClient("disks/d.vhd")
	for _, off := range corrupt {
		junk := bytes.Repeat([]byte{0xa5}, 4096)
		if _, err := pb.UploadPages(context.Background(), streaming.NopCloser(bytes.NewReader(junk)), blob.HTTPRange{Offset: off, Count: 4096}, nil); err != nil {
			t.Fatal(err)
		}
	}
	bad, err := e.store.RepairHashes("d")
	if err != nil || len(bad) != 3 || bad[0] != corrupt[0] || bad[1] != corrupt[1] || bad[2] != corrupt[2] {
		t.Fatalf("repair found %v, %v; want %v", bad, err, corrupt)
	}
	if sent := cycle(t, e.store, []sourceDisk{d}); sent != 3*4096 {
		t.Fatalf("resync sent %d bytes for 3 corrupted blocks", sent)
	}
	replicatest.Point(e.store, "p", time.Now())
	if !bytes.Equal(replicatest.ReadPoint(t, e.store, "p", "d"), d.content(t)) {
		t.Fatal("the replica differs from the source after the resync")
	}
}

func TestRefusedCredentialsAreNotRetried(t *testing.T) {
	e := newEnv(t, azuritetest.Key)
	wrong := "AAAA" + azuritetest.Key[4:]
	s := e.open(t, wrong)
	err := s.CreateDisk("d", 1<<20)
	var te *agentproto.TaskError
	if !errors.As(err, &te) || te.Recoverable || te.Code != "storage_access_denied" {
		t.Fatalf("with a SAS the storage refuses: %v", err)
	}
	if err := s.Check(); err == nil {
		t.Fatal("Check accepted a refused SAS")
	}
	if err := e.store.Check(); err != nil {
		t.Fatalf("Check with a good SAS: %v", err)
	}
}

// pageBytes counts the bytes of page writes to disk data blobs that the
// storage answered: what really crossed the wire to it.
type pageBytes struct {
	next  http.RoundTripper
	bytes atomic.Int64
}

func (c *pageBytes) Do(req *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(req)
	if err == nil && req.Method == http.MethodPut && req.URL.Query().Get("comp") == "page" && strings.HasSuffix(req.URL.Path, ".vhd") {
		c.bytes.Add(req.ContentLength)
	}
	return resp, err
}

func TestAResyncCutByAStorageOutageResumesFromItsCheckpoint(t *testing.T) {
	e := newEnv(t, azuritetest.Key)
	counter := &pageBytes{next: http.DefaultTransport}
	store, err := blobtarget.Open(context.Background(), "vm",
		&azuritetest.KeyCredentials{AccountURL: e.az.AccountURL(), Container: "vm-test", Key: azuritetest.Key},
		blobtarget.Options{Transport: counter, Retry: policy.RetryOptions{MaxRetries: 1, RetryDelay: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	d := newSource(t, "d", 192<<20)
	f, _ := os.OpenFile(d.path, os.O_WRONLY, 0)
	junk := make([]byte, 4<<20)
	rng := rand.New(rand.NewPCG(9, 9))
	for off := int64(0); off < d.size; off += int64(len(junk)) {
		for i := range junk {
			junk[i] = byte(rng.Uint32())
		}
		f.WriteAt(junk, off)
	}
	store.CreateDisk("d", d.size)
	cycle(t, store, []sourceDisk{d})

	// 100 MiB of the disk change: more than one 64 MiB batch.
	for off := int64(40 << 20); off < 140<<20; off += int64(len(junk)) {
		for i := range junk {
			junk[i] = byte(rng.Uint32())
		}
		f.WriteAt(junk, off)
	}
	f.Close()
	differing := int64(100 << 20)
	counter.bytes.Store(0)
	// The storage goes away once the first batch is written.
	stopped := false
	_, err = replicate.File(context.Background(), store, "d", d.path, replicate.Options{Progress: func(int64) {
		if !stopped {
			stopped = true
			e.az.Stop()
		}
	}})
	var te *agentproto.TaskError
	if !errors.As(err, &te) || !te.Recoverable {
		t.Fatalf("the resync with the storage gone: %v", err)
	}
	firstTry := counter.bytes.Load()
	if firstTry == 0 || firstTry >= differing {
		t.Fatalf("the first try wrote %d bytes; the outage should cut it after one batch", firstTry)
	}
	e.az.Restart()
	if _, err := replicate.File(context.Background(), store, "d", d.path, replicate.Options{}); err != nil {
		t.Fatal(err)
	}
	total := counter.bytes.Load()
	if float64(total) >= 1.2*float64(differing) {
		t.Fatalf("%d bytes written in all for %d differing: the resume did not start from the checkpoint", total, differing)
	}
	replicatest.Point(store, "p", time.Now())
	if !bytes.Equal(replicatest.ReadPoint(t, store, "p", "d"), d.content(t)) {
		t.Fatal("after the resumed resync the replica differs from the source")
	}
	t.Logf("first try %d MiB, in all %d MiB for %d MiB differing", firstTry>>20, total>>20, differing>>20)
}

func TestDeleteAllLeavesNoBlobNorSnapshotInTheContainer(t *testing.T) {
	e := newEnv(t, azuritetest.Key)
	d := newSource(t, "d", 2<<20)
	d.scribble(t, rand.New(rand.NewPCG(1, 1)), 10)
	e.store.CreateDisk("d", d.size)
	cycle(t, e.store, []sourceDisk{d})
	replicatest.Point(e.store, "p1", time.Now())
	d.scribble(t, rand.New(rand.NewPCG(2, 2)), 10)
	cycle(t, e.store, []sourceDisk{d})
	replicatest.Point(e.store, "p2", time.Now())
	if err := e.store.DeleteAll(); err != nil {
		t.Fatal(err)
	}
	pager := e.admin.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Include: container.ListBlobsInclude{Snapshots: true}})
	for pager.More() {
		page, err := pager.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range page.Segment.BlobItems {
			t.Errorf("left after DeleteAll: %s (snapshot %v)", *b.Name, b.Snapshot)
		}
	}
	if points, err := e.store.Points(); err != nil || len(points) != 0 {
		t.Fatalf("points after DeleteAll: %v %v", points, err)
	}
}

// The descriptor blob is absent until written, then read back as last
// written.
func TestTheVMDescriptorBlobIsReadBackAsLastWritten(t *testing.T) {
	e := newEnv(t, azuritetest.Key)
	if b, err := e.store.Descriptor(); b != nil || err != nil {
		t.Fatalf("before any: %q %v", b, err)
	}
	for _, want := range []string{`{"format":1,"name":"web"}`, `{"format":1,"name":"web2"}`} {
		if err := e.store.SetDescriptor([]byte(want)); err != nil {
			t.Fatal(err)
		}
		if got, err := e.store.Descriptor(); string(got) != want || err != nil {
			t.Fatalf("read back %q, %v; want %q", got, err, want)
		}
	}
}
