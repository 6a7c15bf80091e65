package tasks

import (
	"bytes"
	"encoding/json"

	"github.com/lifeboat-dr/lifeboat/agent/replica"
	"github.com/lifeboat-dr/lifeboat/agentproto"
)

// describe keeps the VM descriptor the vault sent beside the replicas,
// writing it only when it differs from the stored one (a cycle where
// nothing about the VM changed writes nothing). Replica storage then says
// which VM, host, disks and policy it holds, for a vault rebuilt without
// its database.
func describe(r replica.Store, p agentproto.ReplicationPayload) error {
	if p.Descriptor == nil {
		return nil // an older vault
	}
	want, err := json.MarshalIndent(p.Descriptor, "", "  ")
	if err != nil {
		return err
	}
	have, err := r.Descriptor()
	if err == nil && bytes.Equal(have, want) {
		return nil
	}
	if err == nil {
		err = r.SetDescriptor(want)
	}
	return err
}
