package azuritetest

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
)

// Counter is a storage transport (blobtarget.Options.Transport) that
// counts the bytes the storage sends back in response bodies: what a store
// downloads, in all and from hash blobs. Tests and the benchmark read it.
type Counter struct {
	// Next sends the requests; nil: http.DefaultTransport.
	Next       http.RoundTripper
	Downloaded atomic.Int64
	// HashBytes counts the bodies of reads of disks/*.hashes blobs.
	HashBytes atomic.Int64
}

// Do implements policy.Transporter.
func (c *Counter) Do(req *http.Request) (*http.Response, error) {
	next := c.Next
	if next == nil {
		next = http.DefaultTransport
	}
	resp, err := next.RoundTrip(req)
	if err != nil || resp.Body == nil {
		return resp, err
	}
	resp.Body = &countingBody{ReadCloser: resp.Body, c: c, hashes: strings.HasSuffix(req.URL.Path, ".hashes")}
	return resp, nil
}

type countingBody struct {
	io.ReadCloser
	c      *Counter
	hashes bool
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.c.Downloaded.Add(int64(n))
	if b.hashes {
		b.c.HashBytes.Add(int64(n))
	}
	return n, err
}
