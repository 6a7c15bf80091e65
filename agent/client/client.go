// Package client is the agent's typed client of the vault's agent endpoint.
// Every call is a JSON POST; errors say whether retrying can help.
package client

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// Client calls the vault.
type Client struct {
	base string
	http *http.Client
}

// VaultError is an error answer of the vault.
type VaultError struct {
	Status  int
	Code    string
	Message string
}

func (e *VaultError) Error() string {
	return fmt.Sprintf("the vault answered %d %s: %s", e.Status, e.Code, e.Message)
}

// Permanent reports whether retrying the same call cannot help: the vault
// refused who we are or what we speak. Everything else (network errors,
// 5xx, 429) is worth retrying with back-off.
func Permanent(err error) bool {
	var ve *VaultError
	if !errors.As(err, &ve) {
		return false
	}
	switch ve.Code {
	case agentproto.CodeUnauthenticated, agentproto.CodeIncompatibleProtocol, agentproto.CodeRegistrationKey:
		return true
	}
	return ve.Status >= 400 && ve.Status < 500 && ve.Status != http.StatusTooManyRequests && ve.Status != http.StatusRequestTimeout
}

// New makes a client for base (https://host:port) with the TLS config.
func New(base string, tlsConfig *tls.Config, timeout time.Duration) *Client {
	tr := &http.Transport{
		TLSClientConfig:     tlsConfig,
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		IdleConnTimeout:     90 * time.Second,
		MaxIdleConnsPerHost: 4,
	}
	return &Client{base: strings.TrimRight(base, "/"), http: &http.Client{Transport: tr, Timeout: timeout}}
}

// Close drops idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Post sends body to path and decodes the answer into out (if not nil).
func (c *Client) Post(ctx context.Context, path string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("reach the vault at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("read the vault's answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		var eb agentproto.ErrorBody
		if json.Unmarshal(raw, &eb) == nil && eb.Error.Code != "" {
			return &VaultError{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
		}
		return &VaultError{Status: resp.StatusCode, Code: "http_" + fmt.Sprint(resp.StatusCode), Message: strings.TrimSpace(string(raw))}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("the vault's answer to %s is not what this agent expects: %w", path, err)
		}
	}
	return nil
}

// PinnedTLS trusts only a server whose chain holds the certificate with the
// given SHA-256 fingerprint, and whose leaf that certificate verifies for the
// URL's host: the registration key's promise about which vault it belongs to.
// onPinned receives the pinned certificate, which the agent keeps as the
// only root it trusts for the vault from then on.
func PinnedTLS(vaultURL, fingerprint string, onPinned func(*x509.Certificate)) (*tls.Config, error) {
	u, err := url.Parse(vaultURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("the registration key's vault URL %q is not an https URL", vaultURL)
	}
	want := strings.ToLower(strings.ReplaceAll(fingerprint, ":", ""))
	if len(want) != 64 {
		return nil, fmt.Errorf("the registration key's CA fingerprint %q is not a SHA-256 in hex", fingerprint)
	}
	host := u.Hostname()
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The standard verification is replaced, not skipped: the pin below
		// is stricter than the system's roots.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			var pinned *x509.Certificate
			var seen []string
			certs := make([]*x509.Certificate, 0, len(rawCerts))
			for _, raw := range rawCerts {
				cert, err := x509.ParseCertificate(raw)
				if err != nil {
					return err
				}
				certs = append(certs, cert)
				sum := sha256.Sum256(raw)
				fp := hex.EncodeToString(sum[:])
				seen = append(seen, fp)
				if fp == want {
					pinned = cert
				}
			}
			if pinned == nil {
				return fmt.Errorf("the server at %s is not the vault of this registration key: the CA fingerprints differ (the key expects %s, the server's chain has %s); check the vault URL, or download a new key from the portal", u.Host, want, strings.Join(seen, ", "))
			}
			roots := x509.NewCertPool()
			roots.AddCert(pinned)
			inter := x509.NewCertPool()
			for _, c := range certs[1:] {
				inter.AddCert(c)
			}
			if _, err := certs[0].Verify(x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: inter}); err != nil {
				return fmt.Errorf("the vault's certificate does not verify against the pinned CA for %s: %w", host, err)
			}
			if onPinned != nil {
				onPinned(pinned)
			}
			return nil
		},
	}, nil
}

// MutualTLS trusts only the pinned vault certificate and presents the host's certificate.
// The certificate is read through get at each handshake, so a renewed one is
// used without a restart.
func MutualTLS(caPEM []byte, get func() (*tls.Certificate, error)) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("the stored vault CA is not a PEM certificate")
	}
	return &tls.Config{
		MinVersion:           tls.VersionTLS12,
		RootCAs:              pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return get() },
	}, nil
}

// NewKeyAndCSR makes a host key pair and a certificate request for it, in
// PEM: at registration and at every renewal.
func NewKeyAndCSR(name string) (keyPEM, csrPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}
