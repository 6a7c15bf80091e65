package handlers

import (
	"net/http"
	"reflect"

	"github.com/lifeboat-dr/lifeboat/models"
)

// The OpenAPI of changing a protection without starting over
// (protection_ops.go).

func protectionOpsComponents() []component {
	return []component{
		{Name: "ProtectionUpdate", Type: reflect.TypeFor[ProtectionUpdateJSON](), Input: true, Required: []string{"policy_id"}},
		{Name: "MoveInput", Type: reflect.TypeFor[MoveInputJSON](), Input: true, Required: []string{"target_id", "old_replica"},
			Notes: map[string]fieldNote{"old_replica": {Enum: enumOf(models.OldReplicaDelete, models.OldReplicaKeep)}}},
		{Name: "ReplicateNow", Type: reflect.TypeFor[ReplicateNowJSON](), Doc: "The cycle Replicate now queued, or the one already queued and not started."},
	}
}

func protectionOpsOperations() []operation {
	operator, contributor := models.RoleOperator, models.RoleContributor
	return []operation{
		{Method: http.MethodPut, Path: "/vms/{id}/protection", ID: "updateProtection", Tag: "VMs",
			Summary: "Change a protected VM's policy: it applies from the next cycle; the replicas and recovery points stay and nothing is copied again", Role: contributor,
			Body: "ProtectionUpdate", Status: 200, Answer: "VM",
			Notes: "The next cycle is scheduled by the new copy frequency and prunes by the new retention (older points go then); a cycle already queued runs with the old settings. target_id may be left out; another target than the VM's answers 409 target_change_not_supported: move it with POST /vms/{id}/protection/move. An unknown policy answers 400 validation_failed naming policy_id; an unprotected VM 409 not_protected; one being disabled 409 invalid_protection_state. The same policy again changes nothing (200)."},
		{Method: http.MethodPost, Path: "/vms/{id}/protection/move", ID: "moveProtection", Tag: "VMs",
			Summary: "Move a protected VM to another directory target: a Move replica job seeds the new target while the VM keeps its old target and points, then switches", Role: contributor,
			Body: "MoveInput", Status: 202, Answer: "JobAccepted",
			Notes: "When the seed succeeds the protection switches target and the seed's point is its only point; old_replica delete then deletes the old replica and its points (a last step), keep leaves them on the old target, no longer listed. Cycles wait while the job runs. A move that fails leaves the VM on its old target as it was. Only directory targets, either way (409 target_change_not_supported). 409 replication_busy while a task of the VM waits or runs, replication_paused, test_failover_exists, invalid_protection_state unless Protected, agent_upgrade_required for an agent without move_seed, replica_location_claimed."},
		{Method: http.MethodPost, Path: "/vms/{id}/pause", ID: "pauseReplication", Tag: "VMs",
			Summary: "Pause replication: no cycle or resync starts until it is resumed; a cycle already running finishes", Role: contributor, Status: 200, Answer: "VM",
			Notes: "The VM's health becomes Warning, naming who paused it and when (paused_by, paused_at). Recovery still works from its points. 409 not_protected, replication_paused (already paused), invalid_protection_state (not Protected, ResyncRequired or Resynchronizing)."},
		{Method: http.MethodPost, Path: "/vms/{id}/resume", ID: "resumeReplication", Tag: "VMs",
			Summary: "Resume paused replication; a cycle that came due while paused is queued at once", Role: contributor, Status: 200, Answer: "VM",
			Notes: "409 not_paused when replication is not paused, not_protected for an unprotected VM."},
		{Method: http.MethodPost, Path: "/vms/{id}/replicate-now", ID: "replicateNow", Tag: "VMs",
			Summary: "Replicate now: queue a replication cycle at once, whatever the copy frequency; 202 with the recovery point it makes", Role: operator,
			Status: 202, Answer: "ReplicateNow",
			Notes: "A cycle already queued and not started is returned (already_queued true) instead of a second: its point is captured after the call all the same. A cycle running answers 409 replication_busy (its point may be older than the call): ask again when it ends. 409 replication_paused while paused, invalid_protection_state unless Protected (ResyncRequired: resynchronize instead), not_protected. Operator: it changes no configuration, and gives a fresh point before a drill or failover."},
	}
}
