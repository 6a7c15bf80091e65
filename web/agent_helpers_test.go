package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"testing"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// fakeAgent speaks the agent protocol the way lifeboat-agent does, so the
// vault side is tested on its own over real mutual TLS.
type fakeAgent struct {
	t      testing.TB
	tv     *testVault
	HostID string
	client *http.Client
}

var testAgentInfo = agentproto.AgentInfo{Version: "test", ProtocolVersion: agentproto.ProtocolVersion, Driver: "filedisk", Hostname: "hv-test"}

// registrationKey asks the API for a key of site.
func (tv *testVault) registrationKey(token, siteID string) agentproto.RegistrationKey {
	tv.t.Helper()
	var key agentproto.RegistrationKey
	if status := tv.api(http.MethodPost, "/api/v1/sites/"+siteID+"/registration-key", token, nil, &key); status != http.StatusCreated {
		tv.t.Fatalf("registration key: %d", status)
	}
	return key
}

// newCSR makes a key pair and a certificate request for it.
func newCSR(t testing.TB) (*ecdsa.PrivateKey, string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "hv-test"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// register sends a registration; it returns the agent on 201, else the
// status and error body.
func (tv *testVault) register(secret, name string, info agentproto.AgentInfo) (*fakeAgent, int, agentproto.ErrorBody) {
	tv.t.Helper()
	key, csr := newCSR(tv.t)
	var out agentproto.RegisterResponse
	var problem agentproto.ErrorBody
	status, raw := tv.apiRaw(http.MethodPost, agentproto.PathRegister, "", agentproto.RegisterRequest{Secret: secret, Name: name, CSR: csr, Agent: info})
	if status != http.StatusCreated {
		_ = json.Unmarshal(raw, &problem)
		return nil, status, problem
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		tv.t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	pair, err := tls.X509KeyPair([]byte(out.Certificate), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		tv.t.Fatalf("the vault's certificate does not match the agent's key: %v", err)
	}
	base := tv.srv.Client().Transport.(*http.Transport)
	tr := base.Clone()
	tr.TLSClientConfig = base.TLSClientConfig.Clone()
	tr.TLSClientConfig.Certificates = []tls.Certificate{pair}
	return &fakeAgent{t: tv.t, tv: tv, HostID: out.HostID, client: &http.Client{Transport: tr}}, status, problem
}

// mustRegister registers a new host in site.
func (tv *testVault) mustRegister(token, siteID, name string) *fakeAgent {
	tv.t.Helper()
	a, status, problem := tv.register(tv.registrationKey(token, siteID).Secret, name, testAgentInfo)
	if a == nil {
		tv.t.Fatalf("register %s: %d %+v", name, status, problem)
	}
	return a
}

// call posts body to path over mutual TLS and decodes the answer into out.
func (a *fakeAgent) call(path string, body, out any) (int, agentproto.ErrorBody) {
	a.t.Helper()
	b, _ := json.Marshal(body)
	resp, err := a.client.Post(a.tv.URL+path, "application/json", bytes.NewReader(b))
	if err != nil {
		a.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var problem agentproto.ErrorBody
	if resp.StatusCode >= 300 {
		_ = json.Unmarshal(raw, &problem)
		return resp.StatusCode, problem
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			a.t.Fatalf("POST %s: decode %s: %v", path, raw, err)
		}
	}
	return resp.StatusCode, problem
}

// poll asks for up to free tasks.
func (a *fakeAgent) poll(free int) agentproto.PollResponse {
	a.t.Helper()
	var out agentproto.PollResponse
	if status, problem := a.call(agentproto.PathPoll, agentproto.PollRequest{Agent: testAgentInfo, Free: free}, &out); status != http.StatusOK {
		a.t.Fatalf("poll: %d %+v", status, problem)
	}
	return out
}
