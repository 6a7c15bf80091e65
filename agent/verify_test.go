package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/lifeboat-dr/lifeboat/agent/blobtarget"
	"github.com/lifeboat-dr/lifeboat/agent/blobtarget/azuritetest"
	"github.com/lifeboat-dr/lifeboat/agent/replica/replicatest"
	"github.com/lifeboat-dr/lifeboat/agent/replicate"
)

func TestVerifyCommandChecksAnAzurePointWithTheOperatorsSAS(t *testing.T) {
	az := azuritetest.Start(t)
	cred, _ := container.NewSharedKeyCredential(azuritetest.Account, azuritetest.Key)
	c, _ := container.NewClientWithSharedKeyCredential(az.AccountURL()+"/lifeboat-vm1", cred, nil)
	if _, err := c.Create(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	r, err := blobtarget.Open(context.Background(), "app", &azuritetest.KeyCredentials{AccountURL: az.AccountURL(), Container: "lifeboat-vm1", Key: azuritetest.Key}, blobtarget.Options{})
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "disk.img")
	os.WriteFile(src, bytes.Repeat([]byte("lifeboat"), 1<<17), 0o644)
	r.CreateDisk("d", 1<<20)
	if _, err := replicate.File(context.Background(), r, "d", src, replicate.Options{}); err != nil {
		t.Fatal(err)
	}
	replicatest.Point(r, "p1", time.Now())

	q, err := sas.AccountSignatureValues{Protocol: sas.ProtocolHTTPSandHTTP, ExpiryTime: time.Now().Add(time.Hour),
		Permissions:   (&sas.AccountPermissions{Read: true, List: true}).String(),
		ResourceTypes: (&sas.AccountResourceTypes{Container: true, Object: true}).String()}.SignWithSharedKey(cred)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"verify", "--container-url", az.AccountURL() + "/lifeboat-vm1", "--vm", "app"}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), args, func(string) string { return "" }, &out, &errOut); err == nil || !strings.Contains(err.Error(), "LIFEBOAT_AZURE_SAS") {
		t.Fatalf("without a SAS: %v", err)
	}
	env := func(k string) string {
		if k == "LIFEBOAT_AZURE_SAS" {
			return q.Encode()
		}
		return ""
	}
	if err := run(context.Background(), args, env, &out, &errOut); err != nil {
		t.Fatalf("verify: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "Recovery point p1: 256 blocks checked, 0 mismatched.") {
		t.Fatalf("verify said: %q", out.String())
	}
}
