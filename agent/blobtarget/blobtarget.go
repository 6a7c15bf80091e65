// Package blobtarget keeps one VM's replicas in an Azure Blob container,
// reached with a short-lived SAS the vault issues for that container only.
//
// Layout, in the VM's container:
//
//	disks/DISK.vhd       page blob: the newest replica, the data rounded up
//	                     to a MiB, then a fixed-VHD footer, so Azure can
//	                     import it as a managed disk and qemu-img reads it
//	disks/DISK.hashes    page blob: 16-byte xxh3-128 of every 4 KiB block
//	                     (all-zero bytes: never written, a block of zeros)
//	disks/DISK.json      block blob: the source size and synced signature
//	points/SEQ-ID.json   block blob: a recovery point's manifest, naming the
//	                     snapshots of every disk's two page blobs; its
//	                     metadata repeats the point for listing
//
// A point is blob snapshots taken after a cycle's writes to every disk
// completed, then the manifest, written only if absent: a point is listed
// whole or not at all.
//
// Writes keep the hashes honest: before a batch's pages are written, their
// blocks' hashes are set to unknown; after, to the new content's. A cycle
// cut short leaves unknown hashes, which the next cycle resends.
//
// Hashes are read by range, never the whole blob, and with
// Options.CacheDir kept in a local file per disk (cache.go), so that a
// cycle where little changed downloads little. Each replica has a
// generation, a random number in its metadata that every writer changes
// before it writes; the cache is believed only for the generation it was
// written under. The same number is the hash blob's sequence number, and
// every hash write is conditional on it: a writer that was replaced (its
// task given to another host) can no longer change the hashes.
package blobtarget

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/pageblob"

	"github.com/lifeboat-dr/lifeboat/agent/blocks"
	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agent/vhd"
)

// page is Azure's page size: page writes are aligned to it.
const page = 512

// hashesPerPage is how many 16-byte hashes one page holds.
const hashesPerPage = page / 16

var safeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Credentials is where the store gets its SAS tokens: the vault, for the
// task. Reading or deleting a snapshot takes a token for that snapshot
// alone (sr=bs): the least it needs, and the form Azurite also accepts.
type Credentials interface {
	// ContainerSAS may read, add, create, write, delete and list in the
	// VM's container.
	ContainerSAS(ctx context.Context) (SAS, error)
	// SnapshotSAS may read and delete one snapshot of one blob in it.
	SnapshotSAS(ctx context.Context, blobName, snapshot string) (SAS, error)
}

// SAS is a container URL and a SAS token for it, until Expires.
type SAS struct {
	ContainerURL string
	Token        string // without the leading "?"
	Expires      time.Time
}

// refreshBefore is how long before its expiry a SAS is replaced.
const refreshBefore = 5 * time.Minute

// Options tune a store; zero values take the defaults.
type Options struct {
	// Concurrency is how many page writes (and reads) are in flight for
	// one disk; default 8.
	Concurrency int
	// Retry is the storage client's retry policy for one request (the
	// task as a whole is retried by the vault).
	Retry policy.RetryOptions
	// Transport sends the requests; default the SDK's.
	Transport policy.Transporter
	// CacheDir keeps a local copy of each disk's hashes (a few MiB per
	// GiB of disk) across stores and restarts; "" keeps none, and every
	// cycle downloads the hashes of what it compares.
	CacheDir string
}

// Replica is one VM's replicas in its container.
type Replica struct {
	ctx    context.Context
	vmID   string
	creds  Credentials
	opts   Options
	client *container.Client
	conc   int
	// cacheDir holds this container's hash caches; "" for none.
	cacheDir string

	mu    sync.Mutex
	disks map[string]*disk
}

type disk struct {
	id       string
	data     *pageblob.Client
	hashBlob *pageblob.Client
	// mu is held shared by ReadHashes and alone by everything else.
	mu       sync.RWMutex
	meta     diskMeta // the source disk's size and synced signature, as stored
	metaETag azcore.ETag
	cache    *hashCache // nil: none
	// writer is the generation this store set when it first wrote to the
	// disk (ensureWriter); 0 until then.
	writer uint64
}

var _ replica.Store = (*Replica)(nil)

// Open connects to the VM's container with credentials from creds. ctx
// bounds every storage call the store makes (it is the task's).
func Open(ctx context.Context, vmID string, creds Credentials, opts Options) (*Replica, error) {
	src := &sasSource{get: creds.ContainerSAS}
	first, err := src.current(ctx)
	if err != nil {
		return nil, err
	}
	o := &container.ClientOptions{ClientOptions: clientOptions(src, opts)}
	client, err := container.NewClientWithNoCredential(first.ContainerURL, o)
	if err != nil {
		return nil, fmt.Errorf("the container URL %q: %w", first.ContainerURL, err)
	}
	conc := opts.Concurrency
	if conc <= 0 {
		conc = 8
	}
	r := &Replica{ctx: ctx, vmID: vmID, creds: creds, opts: opts, client: client, conc: conc, disks: map[string]*disk{}}
	if opts.CacheDir != "" {
		// One directory per container: disk ids repeat across VMs.
		sum := sha256.Sum256([]byte(strings.TrimRight(first.ContainerURL, "/")))
		r.cacheDir = filepath.Join(opts.CacheDir, hex.EncodeToString(sum[:16]))
		if err := os.MkdirAll(r.cacheDir, 0o700); err != nil {
			return nil, fmt.Errorf("the hash cache directory: %w", err)
		}
	}
	return r, nil
}

func clientOptions(src *sasSource, opts Options) azcore.ClientOptions {
	o := azcore.ClientOptions{PerCallPolicies: []policy.Policy{src}, Retry: opts.Retry}
	if opts.Transport != nil {
		o.Transport = opts.Transport
	}
	return o
}

// snapshot is a page blob client for one snapshot of a blob, with its own
// snapshot-scoped SAS.
func (r *Replica) snapshot(name, snap string) (*pageblob.Client, error) {
	base := r.client.NewPageBlobClient(name).URL() + "?snapshot=" + url.QueryEscape(snap)
	src := &sasSource{get: func(ctx context.Context) (SAS, error) { return r.creds.SnapshotSAS(ctx, name, snap) }}
	return pageblob.NewClientWithNoCredential(base, &pageblob.ClientOptions{ClientOptions: clientOptions(src, r.opts)})
}

// Check proves the SAS works: it lists the container.
func (r *Replica) Check() error {
	pager := r.client.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{MaxResults: to.Ptr(int32(1))})
	_, err := pager.NextPage(r.ctx)
	return classify(err)
}

// BatchBytes is how much a replication hands to one WriteRuns: each call
// ends when its last page write does, so larger batches keep more writes
// in flight (64 MiB: within 0.9 × of plain concurrent page writes in make
// bench, where 32 MiB was 0.6 ×).
func (r *Replica) BatchBytes() int64 { return 64 << 20 }

// Close closes the hash caches; the store holds no connections of its own.
func (r *Replica) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for _, d := range r.disks {
		d.mu.Lock()
		if d.cache != nil {
			errs = append(errs, d.cache.close())
			d.cache = nil
		}
		d.mu.Unlock()
	}
	r.disks = map[string]*disk{}
	return errors.Join(errs...)
}

// sasSource adds the current SAS to every request, fetching a new one
// from the vault when the one it holds nears its expiry.
type sasSource struct {
	get func(ctx context.Context) (SAS, error)
	mu  sync.Mutex
	sas SAS
}

func (s *sasSource) current(ctx context.Context) (SAS, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sas.Token != "" && time.Until(s.sas.Expires) > refreshBefore {
		return s.sas, nil
	}
	fresh, err := s.get(ctx)
	if err != nil {
		return SAS{}, err
	}
	if fresh.ContainerURL == "" || fresh.Token == "" {
		return SAS{}, errors.New("the vault gave no storage credentials for this task")
	}
	s.sas = fresh
	return fresh, nil
}

// Do implements policy.Policy.
func (s *sasSource) Do(req *policy.Request) (*http.Response, error) {
	sas, err := s.current(req.Raw().Context())
	if err != nil {
		return nil, err
	}
	u := req.Raw().URL
	q := strings.TrimPrefix(strings.TrimPrefix(sas.Token, "?"), "&")
	if u.RawQuery == "" {
		u.RawQuery = q
	} else {
		u.RawQuery += "&" + q
	}
	return req.Next()
}

func dataName(id string) string   { return "disks/" + id + ".vhd" }
func hashesName(id string) string { return "disks/" + id + ".hashes" }
func metaName(id string) string   { return "disks/" + id + ".json" }

type diskMeta struct {
	SizeBytes int64                    `json:"size_bytes"`
	Synced    *replica.SourceSignature `json:"synced,omitempty"`
	// Generation changes whenever a store starts writing the replica (0
	// in replicas from before it existed: no cache believes them).
	Generation uint64 `json:"generation,omitempty"`
}

// newGeneration is a random generation that is also a valid sequence
// number (0 < n < 2^63).
func newGeneration() uint64 {
	for {
		if g := randomUint64() >> 1; g != 0 {
			return g
		}
	}
}

func hashBlobSize(dataSize int64) int64 {
	n := blocks.Count(dataSize) * 16
	return (n + page - 1) / page * page
}

// CreateDisk makes an empty replica of a source disk of size bytes: the
// page blob with its footer, the hash blob, then the metadata, whose
// presence says the other two are complete. An existing replica is kept.
func (r *Replica) CreateDisk(diskID string, size int64) error {
	if !safeName.MatchString(diskID) {
		return fmt.Errorf("disk id %q cannot be a blob name", diskID)
	}
	dataSize := vhd.DataSize(size)
	if size <= 0 || dataSize > vhd.MaxDataSize {
		return fmt.Errorf("disk size %d is not between 1 byte and %d bytes", size, vhd.MaxDataSize)
	}
	if _, _, err := r.readMeta(diskID); err == nil {
		return nil
	} else if !bloberror.HasCode(err, bloberror.BlobNotFound) {
		return classify(err)
	}
	footer, err := vhd.Footer{DataSize: dataSize, Created: time.Now()}.Marshal()
	if err != nil {
		return err
	}
	data := r.client.NewPageBlobClient(dataName(diskID))
	if _, err := data.Create(r.ctx, dataSize+vhd.FooterSize, nil); err != nil {
		return classify(err)
	}
	if _, err := data.UploadPages(r.ctx, streaming.NopCloser(bytes.NewReader(footer)), blob.HTTPRange{Offset: dataSize, Count: int64(len(footer))}, nil); err != nil {
		return classify(err)
	}
	gen := newGeneration()
	if _, err := r.client.NewPageBlobClient(hashesName(diskID)).Create(r.ctx, hashBlobSize(dataSize), &pageblob.CreateOptions{SequenceNumber: to.Ptr(int64(gen))}); err != nil {
		return classify(err)
	}
	_, err = r.writeMeta(diskID, diskMeta{SizeBytes: size, Generation: gen}, nil)
	return err
}

func (r *Replica) readMeta(diskID string) (diskMeta, azcore.ETag, error) {
	var m diskMeta
	b, etag, err := r.download(r.client.NewBlobClient(metaName(diskID)))
	if err != nil {
		return m, "", err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, "", fmt.Errorf("replica of disk %s: damaged metadata: %w", diskID, err)
	}
	return m, etag, nil
}

// writeMeta uploads a disk's metadata; with ifMatch, only over the version
// of that ETag, so that a store never overwrites a generation another
// writer set since it read the metadata (it fails with a conflict). It
// returns the new ETag.
func (r *Replica) writeMeta(diskID string, m diskMeta, ifMatch *azcore.ETag) (azcore.ETag, error) {
	b, _ := json.Marshal(m)
	var o *blockblob.UploadBufferOptions
	if ifMatch != nil {
		o = &blockblob.UploadBufferOptions{AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: ifMatch}}}
	}
	resp, err := r.client.NewBlockBlobClient(metaName(diskID)).UploadBuffer(r.ctx, b, o)
	if err != nil {
		return "", classify(err)
	}
	if resp.ETag == nil {
		return "", nil
	}
	return *resp.ETag, nil
}

func (r *Replica) download(c *blob.Client) ([]byte, azcore.ETag, error) {
	resp, err := c.DownloadStream(r.ctx, nil)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	var etag azcore.ETag
	if resp.ETag != nil {
		etag = *resp.ETag
	}
	return b, etag, err
}

func (r *Replica) disk(diskID string) (*disk, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if d, ok := r.disks[diskID]; ok {
		return d, nil
	}
	if !safeName.MatchString(diskID) {
		return nil, fmt.Errorf("disk id %q cannot be a blob name", diskID)
	}
	m, etag, err := r.readMeta(diskID)
	if err != nil {
		return nil, classify(fmt.Errorf("replica of disk %s: %w", diskID, err))
	}
	d := &disk{id: diskID, meta: m, metaETag: etag,
		data: r.client.NewPageBlobClient(dataName(diskID)), hashBlob: r.client.NewPageBlobClient(hashesName(diskID))}
	if r.cacheDir != "" {
		// A cache that cannot be opened is done without: the hashes are
		// downloaded, and the first write's new generation makes sure the
		// file is not believed later.
		d.cache, _ = openCache(r.cachePath(diskID), m.Generation, d.blockCount())
	}
	r.disks[diskID] = d
	return d, nil
}

func (r *Replica) cachePath(diskID string) string { return filepath.Join(r.cacheDir, diskID+".hashes") }

// ensureWriter makes this store the replica's writer before it first
// changes a disk's hashes: a new generation, so no cache elsewhere (nor
// this one after a crash) is believed for what it writes, and the hash
// blob's sequence number, which fences off the writer before it. The
// cache, if believed until now, stays: it is the blob's until this store
// writes, and writes keep it so. The caller holds d.mu alone.
func (r *Replica) ensureWriter(d *disk) error {
	if d.writer != 0 {
		return nil
	}
	if d.cache != nil {
		// Disbelieved first: a crash until the new generation is in
		// both places leaves a cache no restart believes. One not
		// proven at open is emptied, whatever was put in it.
		err := d.cache.writeHeader(0)
		if err == nil && !d.cache.proven {
			err = d.cache.reset(0, d.blockCount())
		}
		if err != nil {
			if ferr := d.cache.fail(err); ferr != nil {
				return ferr
			}
			d.cache = nil
		}
	}
	gen := newGeneration()
	_, err := d.hashBlob.UpdateSequenceNumber(r.ctx, &pageblob.UpdateSequenceNumberOptions{
		ActionType: to.Ptr(pageblob.SequenceNumberActionTypeUpdate), SequenceNumber: to.Ptr(int64(gen))})
	if err != nil {
		return classify(err)
	}
	if err := r.updateMeta(d, func(m *diskMeta) { m.Generation = gen }); err != nil {
		return err
	}
	d.writer = gen
	if d.cache != nil {
		d.cache.proven = true
		if err := d.cache.writeHeader(gen); err != nil {
			// Left disbelieved on disk; not used further.
			_ = d.cache.fail(err)
			d.cache = nil
		}
	}
	return nil
}

// DiskSize is the source size the replica of a disk holds.
func (r *Replica) DiskSize(diskID string) (int64, error) {
	d, err := r.disk(diskID)
	if err != nil {
		return 0, err
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.meta.SizeBytes, nil
}

// ReadHashes reads the stored hashes of blocks first… of a disk's replica
// (only that range: from the cache, or downloaded); past its end they read
// as unknown.
func (r *Replica) ReadHashes(diskID string, first int64, dst []blocks.Hash) error {
	d, err := r.disk(diskID)
	if err != nil {
		return err
	}
	if first < 0 {
		return fmt.Errorf("hashes from block %d", first)
	}
	d.mu.RLock()
	if d.cache != nil && !d.cache.proven {
		// A cache to fill from the blob: first fence off any writer
		// before this store (it becomes the writer), so that what it
		// reads cannot change behind the cache.
		d.mu.RUnlock()
		d.mu.Lock()
		err := r.ensureWriter(d)
		d.mu.Unlock()
		if err != nil {
			return err
		}
		d.mu.RLock()
	}
	defer d.mu.RUnlock()
	n := max(0, min(int64(len(dst)), d.blockCount()-first))
	for i := n; i < int64(len(dst)); i++ {
		dst[i] = replica.UnknownHash
	}
	return r.hashes(d, first, dst[:n])
}

// Disks lists the disks that have a replica.
func (r *Replica) Disks() ([]string, error) { return r.diskIDs() }

// DeleteDisk deletes the replica of a disk that no recovery point holds:
// its metadata first, so a deletion cut short leaves no half replica that
// looks whole.
func (r *Replica) DeleteDisk(diskID string) error {
	if !safeName.MatchString(diskID) {
		return fmt.Errorf("disk id %q cannot be a blob name", diskID)
	}
	points, err := r.Points()
	if err != nil {
		return err
	}
	if p := replica.HeldByAPoint(points, diskID); p != "" {
		return fmt.Errorf("the replica of disk %s is held by recovery point %s", diskID, p)
	}
	// The cache goes first: a disk made again under this id has another
	// generation anyway, but no file should outlive its replica.
	r.mu.Lock()
	if d, ok := r.disks[diskID]; ok && d.cache != nil {
		d.mu.Lock()
		_ = d.cache.close()
		d.cache = nil
		d.mu.Unlock()
	}
	delete(r.disks, diskID)
	r.mu.Unlock()
	if r.cacheDir != "" {
		if err := os.Remove(r.cachePath(diskID)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("the hash cache of disk %s: %w", diskID, err)
		}
	}
	for _, name := range []string{metaName(diskID), dataName(diskID), hashesName(diskID)} {
		_, err := r.client.NewBlobClient(name).Delete(r.ctx, &blob.DeleteOptions{DeleteSnapshots: to.Ptr(blob.DeleteSnapshotsOptionTypeInclude)})
		if err != nil && !bloberror.HasCode(err, bloberror.BlobNotFound) {
			return classify(err)
		}
	}
	r.mu.Lock()
	delete(r.disks, diskID)
	r.mu.Unlock()
	return nil
}

// WriteRuns writes runs into the newest replica of a disk: their hashes
// set to unknown (in the cache, durably, then in the blob), the pages
// (Concurrency at a time), then the new hashes (in the blob, then the
// cache). At every step a hash the cache or the blob holds is true.
func (r *Replica) WriteRuns(diskID string, runs []replica.Run) error {
	d, err := r.disk(diskID)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := replica.CheckRuns(runs, d.meta.SizeBytes); err != nil {
		return err
	}
	if err := r.ensureWriter(d); err != nil {
		return err
	}
	fresh := make(map[int64]blocks.Hash)
	var touched []int64
	for _, run := range runs {
		for i := 0; i < len(run.Data); i += blocks.BlockSize {
			b := (run.Offset + int64(i)) / blocks.BlockSize
			fresh[b] = blocks.HashBlock(run.Data[i:min(i+blocks.BlockSize, len(run.Data))])
			touched = append(touched, b)
		}
	}
	spans, err := spansOf(touched, d.blockCount(), func(first int64, dst []blocks.Hash) error { return r.hashes(d, first, dst) })
	if err != nil {
		return err
	}
	if err := r.cacheUpdate(d, unknownAll(touched), true); err != nil {
		return err
	}
	if err := r.writeSpans(d, spans, unknownAll(touched)); err != nil {
		return err
	}
	err = r.parallel(len(runs), func(i int) error {
		run := runs[i]
		data := run.Data
		if rem := len(data) % blocks.BlockSize; rem != 0 {
			// The disk's last block, short: pages are whole, and the
			// replica past the source's end holds zeros.
			data = append(append([]byte(nil), data...), make([]byte, blocks.BlockSize-rem)...)
		}
		_, err := d.data.UploadPages(r.ctx, streaming.NopCloser(bytes.NewReader(data)), blob.HTTPRange{Offset: run.Offset, Count: int64(len(data))}, nil)
		return classify(err)
	})
	if err != nil {
		return err
	}
	if err := r.writeSpans(d, spans, fresh); err != nil {
		return err
	}
	// Not synced: lost in a crash, these hashes read as the unknown ones
	// synced above, and their blocks are sent again.
	return r.cacheUpdate(d, fresh, false)
}

// cacheUpdate changes a disk's cached hashes. A cache that fails is
// dropped; if it cannot be, the error stops the write before the blob
// changes under a cache that might still be believed.
func (r *Replica) cacheUpdate(d *disk, set map[int64]blocks.Hash, sync bool) error {
	if d.cache == nil {
		return nil
	}
	if err := d.cache.update(set, sync); err != nil {
		return err
	}
	if d.cache.broken.Load() {
		_ = d.cache.close()
		d.cache = nil
	}
	return nil
}

// parallel runs f(0..n-1), Concurrency at a time, and returns the first
// error; after one, no new call starts.
func (r *Replica) parallel(n int, f func(i int) error) error {
	if n == 1 {
		return f(0)
	}
	sem := make(chan struct{}, r.conc)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for i := range n {
		mu.Lock()
		failed := first != nil
		mu.Unlock()
		if failed {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := f(i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

// Resize grows the replica of a disk to size bytes: both page blobs grow
// (new pages are zeros; never-written hashes read as a zero block's), the
// old footer is cleared and the new one written at the new end. The
// metadata, written last, says whether it is done; every step can run
// again. Snapshots of earlier points keep their size.
func (r *Replica) Resize(diskID string, size int64) error {
	d, err := r.disk(diskID)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if size == d.meta.SizeBytes {
		return nil
	}
	if err := replica.CheckGrowth(d.meta.SizeBytes, size); err != nil {
		return err
	}
	if err := r.ensureWriter(d); err != nil {
		return err
	}
	oldData, newData := vhd.DataSize(d.meta.SizeBytes), vhd.DataSize(size)
	if newData != oldData {
		if d.cache != nil {
			// Disbelieved until the metadata says the new size.
			if err := d.cache.writeHeader(0); err != nil {
				if ferr := d.cache.fail(err); ferr != nil {
					return ferr
				}
				d.cache = nil
			}
		}
		footer, err := vhd.Footer{DataSize: newData, Created: time.Now()}.Marshal()
		if err != nil {
			return err
		}
		// Azure fences page writes by sequence number, not resizes; a
		// replaced writer's resize only adds hashes of zeros, never
		// changes one.
		if _, err := d.hashBlob.Resize(r.ctx, hashBlobSize(newData), nil); err != nil {
			return classify(err)
		}
		if _, err := d.data.Resize(r.ctx, newData+vhd.FooterSize, nil); err != nil {
			return classify(err)
		}
		if _, err := d.data.ClearPages(r.ctx, blob.HTTPRange{Offset: oldData, Count: vhd.FooterSize}, nil); err != nil {
			return classify(err)
		}
		if _, err := d.data.UploadPages(r.ctx, streaming.NopCloser(bytes.NewReader(footer)), blob.HTTPRange{Offset: newData, Count: vhd.FooterSize}, nil); err != nil {
			return classify(err)
		}
	}
	if err := r.updateMeta(d, func(m *diskMeta) { m.SizeBytes, m.Synced = size, nil }); err != nil {
		return err
	}
	if d.cache != nil && newData != oldData {
		// The old blocks' records stay; the new blocks are read (as
		// zeros' hashes) from the blob when first asked for.
		if err := d.cache.grow(d.writer, d.blockCount()); err != nil {
			_ = d.cache.fail(err)
			d.cache = nil
		}
	}
	return nil
}

// SyncedSignature is the source signature at which the replica last
// equalled its source, if one was recorded.
func (r *Replica) SyncedSignature(diskID string) (*replica.SourceSignature, error) {
	d, err := r.disk(diskID)
	if err != nil {
		return nil, err
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.meta.Synced, nil
}

// SetSyncedSignature records (or, with nil, forgets) it.
func (r *Replica) SetSyncedSignature(diskID string, sig *replica.SourceSignature) error {
	d, err := r.disk(diskID)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return r.updateMeta(d, func(m *diskMeta) { m.Synced = sig })
}

// updateMeta changes a disk's metadata blob and the copy read when the
// disk was first used, only if no one else changed the blob meanwhile
// (this store is the replica's only writer during its task; if another
// took over, this one fails rather than undo its new generation). The
// caller holds d.mu alone.
func (r *Replica) updateMeta(d *disk, change func(*diskMeta)) error {
	m := d.meta
	change(&m)
	var ifMatch *azcore.ETag
	if d.metaETag != "" {
		ifMatch = &d.metaETag
	}
	etag, err := r.writeMeta(d.id, m, ifMatch)
	if err != nil {
		return err
	}
	d.meta, d.metaETag = m, etag
	return nil
}

// manifest is a point's manifest blob: the point and its snapshots.
type manifest struct {
	replica.Point
	VM        string                  `json:"vm"` // the VM's id on its host
	Snapshots map[string]diskSnapshot `json:"snapshots"`
}

type diskSnapshot struct {
	Data   string `json:"data"`   // snapshot of disks/DISK.vhd
	Hashes string `json:"hashes"` // snapshot of disks/DISK.hashes
}

func pointName(p replica.Point) string { return fmt.Sprintf("points/%010d-%s.json", p.Seq, p.ID) }

// diskIDs lists the disks that have a replica.
func (r *Replica) diskIDs() ([]string, error) {
	var ids []string
	pager := r.client.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Prefix: to.Ptr("disks/")})
	for pager.More() {
		resp, err := pager.NextPage(r.ctx)
		if err != nil {
			return nil, classify(err)
		}
		for _, b := range resp.Segment.BlobItems {
			if name := *b.Name; strings.HasSuffix(name, ".json") {
				ids = append(ids, strings.TrimSuffix(strings.TrimPrefix(name, "disks/"), ".json"))
			}
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// CreatePoint snapshots the page blobs of spec.Disks and writes the
// manifest. A point with this id that exists already is returned as it is.
func (r *Replica) CreatePoint(spec replica.PointSpec) (replica.Point, error) {
	if !safeName.MatchString(spec.ID) {
		return replica.Point{}, fmt.Errorf("point id %q cannot be a blob name", spec.ID)
	}
	if err := replica.CheckPointSpec(spec); err != nil {
		return replica.Point{}, err
	}
	points, err := r.Points()
	if err != nil {
		return replica.Point{}, err
	}
	seq := 1
	for _, p := range points {
		if p.ID == spec.ID {
			return p, nil
		}
		seq = max(seq, p.Seq+1)
	}
	var started *time.Time
	if spec.ReadStartedAt != nil {
		t := spec.ReadStartedAt.UTC()
		started = &t
	}
	m := manifest{Point: replica.Point{Seq: seq, ID: spec.ID, Time: spec.Time.UTC(), ReadStartedAt: started, Consistency: spec.Consistency,
		Capture: spec.Capture, Disks: map[string]int64{}}, VM: r.vmID, Snapshots: map[string]diskSnapshot{}}
	for _, diskID := range spec.Disks {
		d, err := r.disk(diskID)
		if err != nil {
			return replica.Point{}, err
		}
		data, err := d.data.CreateSnapshot(r.ctx, nil)
		if err != nil {
			return replica.Point{}, classify(err)
		}
		hashes, err := d.hashBlob.CreateSnapshot(r.ctx, nil)
		if err != nil {
			return replica.Point{}, classify(err)
		}
		m.Disks[diskID] = d.meta.SizeBytes
		m.Snapshots[diskID] = diskSnapshot{Data: *data.Snapshot, Hashes: *hashes.Snapshot}
	}
	body, _ := json.MarshalIndent(m, "", "  ")
	listed, _ := json.Marshal(m.Point)
	_, err = r.client.NewBlockBlobClient(pointName(m.Point)).UploadBuffer(r.ctx, body, &blockblob.UploadBufferOptions{
		Metadata:         map[string]*string{"point": to.Ptr(base64.RawURLEncoding.EncodeToString(listed))},
		AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}},
	})
	if err != nil {
		return replica.Point{}, classify(err)
	}
	return m.Point, nil
}

// Points lists the recovery points, oldest first, from the manifests'
// metadata (one listing, no download).
func (r *Replica) Points() ([]replica.Point, error) {
	var points []replica.Point
	pager := r.client.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Prefix: to.Ptr("points/"),
		Include: container.ListBlobsInclude{Metadata: true}})
	for pager.More() {
		resp, err := pager.NextPage(r.ctx)
		if err != nil {
			return nil, classify(err)
		}
		for _, b := range resp.Segment.BlobItems {
			var v *string
			for k, val := range b.Metadata {
				if strings.EqualFold(k, "point") {
					v = val
				}
			}
			if v == nil {
				return nil, fmt.Errorf("recovery point manifest %s has no point metadata", *b.Name)
			}
			raw, err := base64.RawURLEncoding.DecodeString(*v)
			var p replica.Point
			if err == nil {
				err = json.Unmarshal(raw, &p)
			}
			if err != nil {
				return nil, fmt.Errorf("recovery point manifest %s: damaged metadata: %w", *b.Name, err)
			}
			points = append(points, p)
		}
	}
	sort.Slice(points, func(i, j int) bool { return points[i].Seq < points[j].Seq })
	return points, nil
}

func (r *Replica) manifest(pointID string) (manifest, error) {
	var m manifest
	points, err := r.Points()
	if err != nil {
		return m, err
	}
	for _, p := range points {
		if p.ID == pointID {
			return r.manifestOf(p)
		}
	}
	return m, fmt.Errorf("no recovery point %q", pointID)
}

// manifestOf downloads the manifest of a listed point.
func (r *Replica) manifestOf(p replica.Point) (manifest, error) {
	var m manifest
	b, _, err := r.download(r.client.NewBlobClient(pointName(p)))
	if err != nil {
		return m, classify(err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("recovery point %s: damaged manifest: %w", p.ID, err)
	}
	return m, nil
}

// DeletePoint deletes the oldest recovery point (never the newest): its
// manifest first, so it is no longer listed, then its snapshots. A crash
// between the two leaves snapshots that cost space, never a broken point.
func (r *Replica) DeletePoint(id string) error {
	points, err := r.Points()
	if err != nil {
		return err
	}
	switch {
	case len(points) == 0:
		return fmt.Errorf("no recovery point %q", id)
	case points[len(points)-1].ID == id:
		return errors.New("the newest recovery point is never deleted")
	case points[0].ID != id:
		return fmt.Errorf("recovery point %q is not the oldest; points are pruned oldest first", id)
	}
	m, err := r.manifestOf(points[0])
	if err != nil {
		return err
	}
	if _, err := r.client.NewBlobClient(pointName(points[0])).Delete(r.ctx, nil); err != nil && !bloberror.HasCode(err, bloberror.BlobNotFound) {
		return classify(err)
	}
	for diskID, s := range m.Snapshots {
		for _, snap := range []struct{ name, ts string }{{dataName(diskID), s.Data}, {hashesName(diskID), s.Hashes}} {
			c, err := r.snapshot(snap.name, snap.ts)
			if err != nil {
				return err
			}
			if _, err := c.Delete(r.ctx, nil); err != nil && !bloberror.HasCode(err, bloberror.BlobNotFound) {
				return classify(err)
			}
		}
	}
	return nil
}

// DeleteAll deletes every blob in the VM's container, snapshots included:
// manifests first, so no point is listed whose snapshots are going. The
// empty container stays (a container SAS cannot delete it); it costs
// nothing.
func (r *Replica) DeleteAll() error {
	for _, prefix := range []string{"points/", ""} {
		var names []string
		pager := r.client.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Prefix: to.Ptr(prefix)})
		for pager.More() {
			resp, err := pager.NextPage(r.ctx)
			if err != nil {
				return classify(err)
			}
			for _, b := range resp.Segment.BlobItems {
				names = append(names, *b.Name)
			}
		}
		err := r.parallel(len(names), func(i int) error {
			_, err := r.client.NewBlobClient(names[i]).Delete(r.ctx, &blob.DeleteOptions{DeleteSnapshots: to.Ptr(blob.DeleteSnapshotsOptionTypeInclude)})
			if bloberror.HasCode(err, bloberror.BlobNotFound) {
				return nil
			}
			return classify(err)
		})
		if err != nil {
			return err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range r.disks {
		d.mu.Lock()
		if d.cache != nil {
			_ = d.cache.close()
			d.cache = nil
		}
		d.mu.Unlock()
	}
	r.disks = map[string]*disk{}
	if r.cacheDir != "" {
		if err := os.RemoveAll(r.cacheDir); err != nil {
			return fmt.Errorf("the hash caches: %w", err)
		}
	}
	return nil
}

// pointReader reads a disk's data snapshot by ranges.
type pointReader struct {
	ctx  context.Context
	blob *pageblob.Client
	size int64
}

func (p *pointReader) Close() error { return nil }

// ReadAt reads the disk at the point; past the source's size is EOF.
func (p *pointReader) ReadAt(b []byte, off int64) (int, error) {
	if off >= p.size {
		return 0, io.EOF
	}
	n := min(int64(len(b)), p.size-off)
	got, err := p.blob.DownloadBuffer(p.ctx, b[:n], &blob.DownloadBufferOptions{Range: blob.HTTPRange{Offset: off, Count: n}, BlockSize: blocks.MaxRun})
	if err != nil {
		return int(got), classify(err)
	}
	if n < int64(len(b)) {
		return int(n), io.EOF
	}
	return int(n), nil
}

// OpenPoint reads a disk as it was at a recovery point.
func (r *Replica) OpenPoint(pointID, diskID string) (replica.PointReader, int64, error) {
	m, err := r.manifest(pointID)
	if err != nil {
		return nil, 0, err
	}
	s, ok := m.Snapshots[diskID]
	if !ok {
		return nil, 0, fmt.Errorf("recovery point %s has no disk %q", pointID, diskID)
	}
	c, err := r.snapshot(dataName(diskID), s.Data)
	if err != nil {
		return nil, 0, err
	}
	return &pointReader{ctx: r.ctx, blob: c, size: m.Disks[diskID]}, m.Disks[diskID], nil
}

// VerifyPoint reads every block of every disk of a point from its
// snapshots and checks it against the hashes snapshotted with it.
func (r *Replica) VerifyPoint(pointID string) (int64, []replica.Mismatch, error) {
	m, err := r.manifest(pointID)
	if err != nil {
		return 0, nil, err
	}
	ids := make([]string, 0, len(m.Snapshots))
	for id := range m.Snapshots {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var checked int64
	var bad []replica.Mismatch
	for _, id := range ids {
		size := m.Disks[id]
		hc, err := r.snapshot(hashesName(id), m.Snapshots[id].Hashes)
		if err != nil {
			return checked, bad, err
		}
		dc, err := r.snapshot(dataName(id), m.Snapshots[id].Data)
		if err != nil {
			return checked, bad, err
		}
		err = r.streamMismatches(dc, size, func(first int64, dst []blocks.Hash) error { return r.downloadHashes(hc, first, dst) },
			func(_ int64, _ []blocks.Hash, offs []int64) error {
				for _, off := range offs {
					bad = append(bad, replica.Mismatch{Disk: id, Offset: off})
				}
				return nil
			})
		if err != nil {
			return checked, bad, err
		}
		checked += blocks.Count(size)
	}
	return checked, bad, nil
}

// RepairHashes reads a disk's replica back and marks unknown the hash of
// every block whose content no longer matches it (the storage changed
// it), so the next cycle rewrites those blocks. It returns their offsets.
func (r *Replica) RepairHashes(diskID string) ([]int64, error) {
	d, err := r.disk(diskID)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := r.ensureWriter(d); err != nil {
		return nil, err
	}
	if d.cache != nil {
		// The storage changed blocks behind the hashes' back: the check
		// goes by the blob's hashes, and the cache is refilled with them
		// as it goes (the found blocks unknown).
		if err := d.cache.reset(d.writer, d.blockCount()); err != nil {
			if ferr := d.cache.fail(err); ferr != nil {
				return nil, ferr
			}
			d.cache = nil
		}
	}
	var bad []int64
	err = r.streamMismatches(d.data, d.meta.SizeBytes, func(first int64, dst []blocks.Hash) error { return r.downloadHashes(d.hashBlob, first, dst) },
		func(first int64, want []blocks.Hash, offs []int64) error {
			bad = append(bad, offs...)
			found := make([]int64, len(offs))
			for i, off := range offs {
				found[i] = off / blocks.BlockSize
				want[found[i]-first] = replica.UnknownHash
			}
			if len(found) > 0 {
				spans, err := spansOf(found, d.blockCount(), func(first int64, dst []blocks.Hash) error { return r.downloadHashes(d.hashBlob, first, dst) })
				if err != nil {
					return err
				}
				if err := r.writeSpans(d, spans, unknownAll(found)); err != nil {
					return err
				}
			}
			if d.cache != nil {
				return d.cache.fill(first/hashesPerRecord, want)
			}
			return nil
		})
	if err != nil || len(bad) == 0 {
		return bad, err
	}
	return bad, r.updateMeta(d, func(m *diskMeta) { m.Synced = nil })
}
