package blobtarget_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/lifeboat-dr/lifeboat/agent/blobtarget"
	"github.com/lifeboat-dr/lifeboat/agent/blobtarget/azuritetest"
	"github.com/lifeboat-dr/lifeboat/agent/blocks"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agent/replica/replicatest"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// openWith opens a store on the env's container with a hash cache in
// cacheDir ("" for none) and requests sent through transport (nil: the
// SDK's).
func (e *env) openWith(t *testing.T, cacheDir string, transport policy.Transporter) *blobtarget.Replica {
	t.Helper()
	creds := &azuritetest.KeyCredentials{AccountURL: e.az.AccountURL(), Container: "vm-test", Key: azuritetest.Key}
	s, err := blobtarget.Open(context.Background(), "vm", creds, blobtarget.Options{CacheDir: cacheDir, Transport: transport,
		Retry: policy.RetryOptions{MaxRetries: 1, RetryDelay: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// sparseSource is a source disk of size bytes that takes no room until
// written.
func sparseSource(t *testing.T, id string, size int64) sourceDisk {
	t.Helper()
	d := sourceDisk{id, filepath.Join(t.TempDir(), id+".img"), size}
	f, err := os.Create(d.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return d
}

// put writes b into the source disk at off.
func (d sourceDisk) put(t *testing.T, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(d.path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func (d sourceDisk) block(t *testing.T, off int64) []byte {
	t.Helper()
	f, err := os.Open(d.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, blocks.BlockSize)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func readHash(t *testing.T, s replica.Store, disk string, block int64) blocks.Hash {
	t.Helper()
	h := make([]blocks.Hash, 1)
	if err := s.ReadHashes(disk, block, h); err != nil {
		t.Fatal(err)
	}
	return h[0]
}

// pointBlock reads one block of a disk at a recovery point.
func pointBlock(t *testing.T, s replica.Store, point, disk string, off int64) []byte {
	t.Helper()
	pr, _, err := s.OpenPoint(point, disk)
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	b := make([]byte, blocks.BlockSize)
	if _, err := pr.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return b
}

func TestADeltaCycleWithAWarmCacheDownloadsInProportionToTheChangeNotToTheDisk(t *testing.T) {
	e := newEnv(t, azuritetest.Key)
	cacheDir := t.TempDir()
	const size = 1 << 30
	hashBlob := int64(size / blocks.BlockSize * 16) // 4 MiB
	rng := rand.New(rand.NewPCG(11, 12))
	d := sparseSource(t, "big", size)
	d.put(t, 100<<20, randomBytes(rng, 2<<20))

	first := e.openWith(t, cacheDir, nil)
	if err := first.CreateDisk(d.id, size); err != nil {
		t.Fatal(err)
	}
	if sent := cycle(t, first, []sourceDisk{d}); sent != 2<<20 {
		t.Fatalf("first cycle sent %d bytes for 2 MiB of data", sent)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	// A restart: the cache is still believed, every hash is read locally.
	counter := &azuritetest.Counter{}
	s := e.openWith(t, cacheDir, counter)
	all := make([]blocks.Hash, size/blocks.BlockSize)
	if err := s.ReadHashes(d.id, 0, all); err != nil {
		t.Fatal(err)
	}
	if got := counter.HashBytes.Load(); got != 0 {
		t.Fatalf("after a restart, reading every hash downloaded %d bytes of the hash blob; the cache was not believed", got)
	}

	changed := []int64{10 << 20, 500 << 20, size - blocks.BlockSize}
	for _, off := range changed {
		d.put(t, off, randomBytes(rng, blocks.BlockSize))
	}
	counter.Downloaded.Store(0)
	if sent := cycle(t, s, []sourceDisk{d}); sent != int64(len(changed))*blocks.BlockSize {
		t.Fatalf("delta cycle sent %d bytes for %d changed blocks", sent, len(changed))
	}
	down := counter.Downloaded.Load()
	t.Logf("delta cycle downloaded %d bytes (%d of them hashes); the hash blob is %d", down, counter.HashBytes.Load(), hashBlob)
	if down >= hashBlob/50 {
		t.Fatalf("a delta cycle of %d blocks downloaded %d bytes: not well under the %d-byte hash blob", len(changed), down, hashBlob)
	}
	if _, err := replicatest.Point(s, "p1", time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, off := range changed {
		if !bytes.Equal(pointBlock(t, s, "p1", d.id, off), d.block(t, off)) {
			t.Fatalf("the block at %d differs from the source", off)
		}
	}

	// The same cycle without a cache downloads the whole hash blob: the
	// counter measures what the cache saves.
	control := &azuritetest.Counter{}
	d.put(t, 700<<20, randomBytes(rng, blocks.BlockSize))
	cycle(t, e.openWith(t, "", control), []sourceDisk{d})
	if control.HashBytes.Load() < hashBlob {
		t.Fatalf("without a cache a cycle downloaded %d bytes of hashes, less than the %d-byte blob", control.HashBytes.Load(), hashBlob)
	}
}

func TestACacheOfAnEarlierGenerationIsNotBelievedAfterAnotherWriter(t *testing.T) {
	e := newEnv(t, azuritetest.Key)
	cacheDir := t.TempDir()
	rng := rand.New(rand.NewPCG(13, 14))
	d := newSource(t, "d", 8<<20)
	d.scribble(t, rng, 20)
	const off = 3 << 20
	old := d.block(t, off)
	a := e.openWith(t, cacheDir, nil)
	a.CreateDisk(d.id, d.size)
	cycle(t, a, []sourceDisk{d})
	a.Close()

	// Another writer (another host, no cache of ours) changes the block.
	d.put(t, off, randomBytes(rng, blocks.BlockSize))
	if sent := cycle(t, e.openWith(t, "", nil), []sourceDisk{d}); sent != blocks.BlockSize {
		t.Fatalf("the other writer sent %d bytes", sent)
	}
	// The source goes back to what our cache holds for it.
	d.put(t, off, old)
	a = e.openWith(t, cacheDir, nil)
	if got := readHash(t, a, d.id, off/blocks.BlockSize); got == blocks.HashBlock(old) {
		t.Fatal("the cache of an earlier generation was believed: it gives the hash the other writer replaced")
	}
	if sent := cycle(t, a, []sourceDisk{d}); sent != blocks.BlockSize {
		t.Fatalf("the block set back was not sent again (%d bytes sent)", sent)
	}
	replicatest.Point(a, "p", time.Now())
	if !bytes.Equal(replicatest.ReadPoint(t, a, "p", d.id), d.content(t)) {
		t.Fatal("the replica differs from the source")
	}
}

func TestAReplacedWriterCanNoLongerChangeTheHashes(t *testing.T) {
	e := newEnv(t, azuritetest.Key)
	rng := rand.New(rand.NewPCG(15, 16))
	d := newSource(t, "d", 4<<20)
	a := e.openWith(t, t.TempDir(), nil)
	a.CreateDisk(d.id, d.size)
	d.scribble(t, rng, 5)
	cycle(t, a, []sourceDisk{d})
	// Its task goes to another host, which writes; the first one, still
	// running, writes again.
	d.scribble(t, rng, 5)
	cycle(t, e.openWith(t, "", nil), []sourceDisk{d})
	err := a.WriteRuns(d.id, []replica.Run{{Offset: 0, Data: randomBytes(rng, blocks.BlockSize)}})
	var te *agentproto.TaskError
	if !errors.As(err, &te) || te.Code != "storage_conflict" {
		t.Fatalf("the replaced writer's write: %v, want a storage_conflict", err)
	}
	s := e.openWith(t, "", nil)
	replicatest.Point(s, "p", time.Now())
	if !bytes.Equal(replicatest.ReadPoint(t, s, "p", d.id), d.content(t)) {
		t.Fatal("the replaced writer changed the replica")
	}
}

// failHashWrites fails every hash-page write once a data-page write went
// through: a cycle whose data landed but whose new hashes did not.
type failHashWrites struct {
	armed, dataWritten atomic.Bool
}

func (f *failHashWrites) Do(req *http.Request) (*http.Response, error) {
	page := req.Method == http.MethodPut && req.URL.Query().Get("comp") == "page"
	if f.armed.Load() && f.dataWritten.Load() && page && strings.HasSuffix(req.URL.Path, ".hashes") {
		return nil, errors.New("injected: the storage is gone")
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err == nil && f.armed.Load() && page && strings.HasSuffix(req.URL.Path, ".vhd") && resp.StatusCode < 300 {
		f.dataWritten.Store(true)
	}
	return resp, err
}

func TestAWriteCutShortNeverLeavesTheOldHashInTheCache(t *testing.T) {
	e := newEnv(t, azuritetest.Key)
	cacheDir := t.TempDir()
	rng := rand.New(rand.NewPCG(17, 18))
	d := newSource(t, "d", 4<<20)
	d.scribble(t, rng, 10)
	const off = 1 << 20
	old := d.block(t, off)
	faults := &failHashWrites{}
	s := e.openWith(t, cacheDir, faults)
	s.CreateDisk(d.id, d.size)
	cycle(t, s, []sourceDisk{d})

	// The block's new content lands; its new hash does not.
	d.put(t, off, randomBytes(rng, blocks.BlockSize))
	faults.armed.Store(true)
	err := s.WriteRuns(d.id, []replica.Run{{Offset: off, Data: d.block(t, off)}})
	if err == nil || !faults.dataWritten.Load() {
		t.Fatalf("the injected fault did not cut the write after its data: %v", err)
	}
	if h := readHash(t, s, d.id, off/blocks.BlockSize); h != replica.UnknownHash {
		t.Fatalf("after the cut write the block's hash is %x, want unknown", h)
	}
	s.Close()
	// The source goes back to the content whose hash the cache held.
	d.put(t, off, old)
	s = e.openWith(t, cacheDir, nil)
	if h := readHash(t, s, d.id, off/blocks.BlockSize); h != replica.UnknownHash {
		t.Fatalf("after a restart the block's hash is %x, want unknown", h)
	}
	if sent := cycle(t, s, []sourceDisk{d}); sent != blocks.BlockSize {
		t.Fatalf("the next cycle sent %d bytes, want the one block", sent)
	}
	replicatest.Point(s, "p", time.Now())
	if !bytes.Equal(replicatest.ReadPoint(t, s, "p", d.id), d.content(t)) {
		t.Fatal("the replica differs from the source")
	}
}

func TestADamagedCacheFileIsNotBelieved(t *testing.T) {
	e := newEnv(t, azuritetest.Key)
	cases := []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"a record's bytes changed", func(t *testing.T, path string) {
			// Block 300's hash, in record 1, made a zero block's (its
			// record's checksum not updated: a torn write).
			f, _ := os.OpenFile(path, os.O_WRONLY, 0)
			defer f.Close()
			if _, err := f.WriteAt(blocks.ZeroHash[:], 4096+4112+(300-256)*16); err != nil {
				t.Fatal(err)
			}
		}},
		{"the file cut short", func(t *testing.T, path string) {
			if err := os.Truncate(path, 4096+4112+100); err != nil {
				t.Fatal(err)
			}
		}},
		{"the header damaged", func(t *testing.T, path string) {
			f, _ := os.OpenFile(path, os.O_WRONLY, 0)
			defer f.Close()
			if _, err := f.WriteAt([]byte{0x55}, 20); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cacheDir := t.TempDir()
			d := newSource(t, "d"+string(rune('0'+i)), 2<<20)
			d.scribble(t, rand.New(rand.NewPCG(19, uint64(i))), 30)
			const block = 300
			d.put(t, block*blocks.BlockSize, randomBytes(rand.New(rand.NewPCG(20, 20)), blocks.BlockSize))
			s := e.openWith(t, cacheDir, nil)
			s.CreateDisk(d.id, d.size)
			cycle(t, s, []sourceDisk{d})
			s.Close()
			paths, _ := filepath.Glob(filepath.Join(cacheDir, "*", d.id+".hashes"))
			if len(paths) != 1 {
				t.Fatalf("cache files %v", paths)
			}
			c.damage(t, paths[0])
			counter := &azuritetest.Counter{}
			s = e.openWith(t, cacheDir, counter)
			if got, want := readHash(t, s, d.id, block), blocks.HashBlock(d.block(t, block*blocks.BlockSize)); got != want {
				t.Fatalf("block %d reads as %x, want the stored %x", block, got, want)
			}
			if counter.HashBytes.Load() == 0 {
				t.Fatal("the hash was not downloaded: the damaged cache was believed")
			}
		})
	}
}

func TestAStoreFillingItsCacheFencesOffTheWriterBeforeIt(t *testing.T) {
	e := newEnv(t, azuritetest.Key)
	rng := rand.New(rand.NewPCG(21, 22))
	d := newSource(t, "d", 4<<20)
	other := e.openWith(t, "", nil)
	other.CreateDisk(d.id, d.size)
	d.scribble(t, rng, 5)
	cycle(t, other, []sourceDisk{d})
	// A store whose cache cannot prove itself reads hashes: it must take
	// over first, or the other writer could change what it caches.
	s := e.openWith(t, t.TempDir(), nil)
	readHash(t, s, d.id, 0)
	err := other.WriteRuns(d.id, []replica.Run{{Offset: 0, Data: randomBytes(rng, blocks.BlockSize)}})
	var te *agentproto.TaskError
	if !errors.As(err, &te) || te.Code != "storage_conflict" {
		t.Fatalf("the earlier writer's write after the cache filled: %v, want a storage_conflict", err)
	}
}

func TestAGrownDiskKeepsItsCacheAndHashesItsNewBlocksAsZeros(t *testing.T) {
	e := newEnv(t, azuritetest.Key)
	cacheDir := t.TempDir()
	rng := rand.New(rand.NewPCG(23, 24))
	d := newSource(t, "d", 2<<20)
	d.scribble(t, rng, 10)
	s := e.openWith(t, cacheDir, nil)
	s.CreateDisk(d.id, d.size)
	cycle(t, s, []sourceDisk{d})
	// The source grows by 3 MiB, data in the new part.
	d.put(t, 4<<20, randomBytes(rng, 8192))
	d.size = 4<<20 + 8192
	if err := s.Resize(d.id, d.size); err != nil {
		t.Fatal(err)
	}
	if h := readHash(t, s, d.id, (3<<20)/blocks.BlockSize); h != blocks.ZeroHash {
		t.Fatalf("a new block's hash is %x, want a zero block's", h)
	}
	s.Close()
	counter := &azuritetest.Counter{}
	s = e.openWith(t, cacheDir, counter)
	old := make([]blocks.Hash, (2<<20)/blocks.BlockSize)
	if err := s.ReadHashes(d.id, 0, old); err != nil {
		t.Fatal(err)
	}
	if counter.HashBytes.Load() != 0 {
		t.Fatalf("after the resize and a restart the old blocks' hashes were downloaded (%d bytes)", counter.HashBytes.Load())
	}
	if sent := cycle(t, s, []sourceDisk{d}); sent != 8192 {
		t.Fatalf("after the resize the cycle sent %d bytes, want the 8 KiB written", sent)
	}
	replicatest.Point(s, "p", time.Now())
	if !bytes.Equal(replicatest.ReadPoint(t, s, "p", d.id), d.content(t)) {
		t.Fatal("the grown replica differs from the source")
	}
}
