package main

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"

	"github.com/lifeboat-dr/lifeboat/models"
	"github.com/lifeboat-dr/lifeboat/web/pki"
)

// agentCA adapts the vault CA to what the agent endpoint needs.
type agentCA struct{ ca *pki.CA }

func (a agentCA) SignHost(csrPEM []byte, hostID string) ([]byte, *models.HostCertificate, error) {
	issued, err := a.ca.SignClient(csrPEM, hostID)
	if err != nil {
		return nil, nil, err
	}
	return issued.PEM, &models.HostCertificate{Serial: issued.Serial, Fingerprint: issued.Fingerprint, NotAfter: issued.NotAfter}, nil
}

func (a agentCA) CACertPEM() []byte { return a.ca.CertPEM }

// pinnedFingerprint is what registration keys tell agents to pin: the
// SHA-256 of the last certificate of the chain the vault serves (the vault
// CA, or the top of the operator's chain).
func pinnedFingerprint(cert tls.Certificate) (string, error) {
	last := cert.Certificate[len(cert.Certificate)-1]
	if _, err := x509.ParseCertificate(last); err != nil {
		return "", err
	}
	sum := sha256.Sum256(last)
	return hex.EncodeToString(sum[:]), nil
}
