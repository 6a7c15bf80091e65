package blobtarget

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"

	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// classify turns a storage failure into a task error that says whether a
// retry can help: refused credentials and missing replicas cannot;
// throttling, server errors and an unreachable endpoint can.
func classify(err error) error {
	if err == nil {
		return nil
	}
	te := classifyRaw(err)
	// Errors of the transport quote the request URL, SAS included.
	if t, ok := te.(*agentproto.TaskError); ok {
		t.Message = agentproto.RedactSAS(t.Message)
	}
	return te
}

func classifyRaw(err error) error {
	var te *agentproto.TaskError
	if errors.As(err, &te) || errors.Is(err, context.Canceled) {
		return err
	}
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		if errors.Is(err, context.DeadlineExceeded) {
			return &agentproto.TaskError{Code: "storage_timeout", Message: "Azure Blob storage did not answer in time: " + err.Error(), Recoverable: true}
		}
		return &agentproto.TaskError{Code: "target_unavailable", Message: "Azure Blob storage cannot be reached: " + err.Error(), Recoverable: true}
	}
	what := fmt.Sprintf("Azure Blob storage answered %d %s", re.StatusCode, re.ErrorCode)
	switch {
	case re.StatusCode == http.StatusUnauthorized || re.StatusCode == http.StatusForbidden:
		return &agentproto.TaskError{Code: "storage_access_denied",
			Message: what + ": it refused the SAS the vault issued; check the target's account key (Settings → Targets) and that the key was not rotated"}
	case bloberror.HasCode(err, bloberror.ContainerNotFound, bloberror.ContainerBeingDeleted):
		return &agentproto.TaskError{Code: "replica_missing",
			Message: what + ": the VM's container is gone; disable protection and enable it again to make a new replica"}
	case bloberror.HasCode(err, bloberror.BlobNotFound):
		return &agentproto.TaskError{Code: "replica_missing",
			Message: what + ": a replica blob is gone; disable protection and enable it again to make a new replica"}
	case re.StatusCode == http.StatusServiceUnavailable || re.StatusCode == http.StatusInternalServerError ||
		re.StatusCode == http.StatusTooManyRequests || re.StatusCode == http.StatusRequestTimeout ||
		re.StatusCode == http.StatusBadGateway || re.StatusCode == http.StatusGatewayTimeout:
		return &agentproto.TaskError{Code: "storage_throttled", Message: what + ": the storage is busy or failing; the cycle is retried", Recoverable: true}
	case re.StatusCode == http.StatusConflict || re.StatusCode == http.StatusPreconditionFailed:
		return &agentproto.TaskError{Code: "storage_conflict", Message: what + ": another writer changed the replica at the same time; the cycle is retried", Recoverable: true}
	}
	return &agentproto.TaskError{Code: "storage_rejected", Message: what + ": the storage refused the request; this is a Lifeboat bug or an unsupported storage account, please report it"}
}
