package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/lifeboat-dr/lifeboat/agent/blobtarget"
	"github.com/lifeboat-dr/lifeboat/agent/blobtarget/azuritetest"
	"github.com/lifeboat-dr/lifeboat/agent/blocks"
)

// benchSparseAzure measures the bytes a delta cycle reads from Azure Blob
// storage (Azurite), counted by a TCP proxy between the store and Azurite,
// beside the data that changed: reading the whole hash blob every cycle is
// a cost that grows with the disk.
func benchSparseAzure(dir string, size int64) error {
	if _, err := azuritetest.Binary(); err != nil {
		fmt.Printf("\nSparse disk, Azure Blob (Azurite): not measured: %v; run make test-deps\n", err)
		return nil
	}
	az, err := azuritetest.Launch(filepath.Join(dir, "azurite-sparse"))
	if err != nil {
		return err
	}
	defer az.Stop()
	defer os.RemoveAll(filepath.Join(dir, "azurite-sparse"))
	proxy, err := startCountingProxy(az.AccountURL())
	if err != nil {
		return err
	}
	defer proxy.Close()
	ctx := context.Background()
	cred, err := container.NewSharedKeyCredential(azuritetest.Account, azuritetest.Key)
	if err != nil {
		return err
	}
	c, err := container.NewClientWithSharedKeyCredential(az.AccountURL()+"/lifeboat-sparse", cred, nil)
	if err != nil {
		return err
	}
	if _, err := c.Create(ctx, nil); err != nil {
		return err
	}
	src := filepath.Join(dir, "sparse-azure-source.img")
	defer os.Remove(src)
	data, err := makeSparseDisk(src, size, sparseData, 31)
	if err != nil {
		return err
	}
	// The cache, when the store has one, lasts from cycle to cycle as an
	// agent's state directory does.
	spec := childSpec{Kind: "azure", Source: src, AccountURL: proxy.AccountURL(az.AccountURL()), Container: "lifeboat-sparse",
		CacheDir: filepath.Join(dir, "sparse-azure-cache")}
	defer os.RemoveAll(spec.CacheDir)
	if err := createInChild(spec, size); err != nil {
		return err
	}
	cache := "hash cache in " + spec.CacheDir + ", kept between cycles"

	fmt.Println()
	fmt.Printf("Sparse disk, Azure Blob (Azurite): %d GiB, %.0f %% data in random 1 MiB extents (%d MiB), then %.0f %% churn; %s\n",
		size>>30, sparseData*100, data/mib, sparseChurn*100, cache)
	fmt.Printf("Bytes counted on the wire between the store and Azurite (HTTP headers and bodies) in each child process.\n")
	fmt.Printf("%-44s %10s %12s %12s %12s %14s %8s  %s\n", "child process", "seconds", "← read MiB", "→ sent MiB", "changed MiB", "hash blob MiB", "× change", "goal")
	hashBlob := blocks.Count(size) * 16
	row := func(name string, spec childSpec, changed int64, goal string) error {
		before := proxy.Counts()
		res, err := runChild(spec)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		after := proxy.Counts()
		read, sent := after.fromUpstream-before.fromUpstream, after.toUpstream-before.toUpstream
		ratio := ""
		if changed > 0 {
			ratio = fmt.Sprintf("%.3f", float64(read)/float64(changed))
		}
		fmt.Printf("%-44s %10.2f %12.2f %12.2f %12.1f %14.1f %8s  %s\n", name, res.Seconds, float64(read)/mib, float64(sent)/mib,
			float64(changed)/mib, float64(hashBlob)/mib, ratio, goal)
		return nil
	}
	base := spec
	base.OpenOnly = true
	if err := row("opens the store only (baseline)", base, 0, ""); err != nil {
		return err
	}
	if err := row("initial copy", spec, data, ""); err != nil {
		return err
	}
	changed, err := churnExtents(src, size, sparseChurn, 32)
	if err != nil {
		return err
	}
	return row("delta cycle", spec, changed, "read ≪ hash blob; follows the change")
}

// openAzureChild opens the child's store through the proxy.
func openAzureChild(ctx context.Context, spec childSpec) (*blobtarget.Replica, error) {
	opts := blobtarget.Options{Concurrency: concurrency, CacheDir: spec.CacheDir}
	creds := &azuritetest.KeyCredentials{AccountURL: spec.AccountURL, Container: spec.Container, Key: azuritetest.Key}
	return blobtarget.Open(ctx, "vm", creds, opts)
}

// countingProxy forwards loopback TCP connections to Azurite and counts
// the bytes each way: what the store reads from storage, and sends.
type countingProxy struct {
	ln           net.Listener
	upstream     string
	fromUpstream atomic.Int64
	toUpstream   atomic.Int64
}

type proxyCounts struct{ fromUpstream, toUpstream int64 }

func startCountingProxy(accountURL string) (*countingProxy, error) {
	u, err := url.Parse(accountURL)
	if err != nil {
		return nil, fmt.Errorf("account URL %q: %w", accountURL, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &countingProxy{ln: ln, upstream: u.Host}
	go p.serve()
	return p, nil
}

// AccountURL is accountURL (Azurite's) with the proxy's address instead.
func (p *countingProxy) AccountURL(accountURL string) string {
	return strings.Replace(accountURL, p.upstream, p.ln.Addr().String(), 1)
}

func (p *countingProxy) Counts() proxyCounts {
	return proxyCounts{p.fromUpstream.Load(), p.toUpstream.Load()}
}

func (p *countingProxy) Close() error { return p.ln.Close() }

func (p *countingProxy) serve() {
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		go p.forward(down)
	}
}

func (p *countingProxy) forward(down net.Conn) {
	defer down.Close()
	up, err := net.Dial("tcp", p.upstream)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(countingWriter{up, &p.toUpstream}, down)
		_ = up.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	_, _ = io.Copy(countingWriter{down, &p.fromUpstream}, up)
	_ = down.(*net.TCPConn).CloseWrite()
	<-done
}

// countingWriter counts as it writes, so that the counts are complete as
// soon as the child has had its bytes, before its connections close.
type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}
