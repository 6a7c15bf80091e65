package pki

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
)

// ClientLifetime is how long an agent's certificate is valid; agents renew
// when a third of it remains.
const ClientLifetime = 90 * 24 * time.Hour

// IssuedCert describes a certificate the CA signed.
type IssuedCert struct {
	PEM         []byte
	Serial      string // hex
	Fingerprint string // hex SHA-256 of the DER
	NotAfter    time.Time
}

// SignClient signs a CSR for an agent: the certificate names the host id,
// whatever the CSR asked for, and is good only for client authentication.
func (ca *CA) SignClient(csrPEM []byte, hostID string) (*IssuedCert, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("the certificate request is not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("the certificate request cannot be read: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("the certificate request's signature is invalid: %w", err)
	}
	now := time.Now()
	serial := randomSerial()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: hostID, Organization: []string{"Lifeboat host"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(ClientLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign the host certificate: %w", err)
	}
	sum := sha256.Sum256(der)
	return &IssuedCert{
		PEM:         pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Serial:      hex.EncodeToString(serial.Bytes()),
		Fingerprint: hex.EncodeToString(sum[:]),
		NotAfter:    tmpl.NotAfter,
	}, nil
}

// Pool is a pool holding only the CA, for verifying agents' certificates.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// SerialOf is the hex serial of a certificate, as SignClient reports it.
func SerialOf(cert *x509.Certificate) string {
	return hex.EncodeToString(cert.SerialNumber.Bytes())
}
