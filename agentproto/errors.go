package agentproto

import "regexp"

// ErrorInfo describes one error code a user can see: in an API answer, on
// a portal page, or as the error of a task and its job. The table below is
// the one place they are listed; docs/errors.md is generated from it
// (go test ./agentproto -run TestErrorsDoc -update), and a test fails when
// the code uses a code the table lacks, or the document differs.
type ErrorInfo struct {
	Code    string
	Where   string // "API" (and portal), "agent endpoint", "task" (a job's error), "health", or "vault" (its start)
	Status  int    // the HTTP status, for API and agent endpoint errors
	Message string // what happened
	Cause   string // the likely cause
	Action  string // what to do
	// Retried says the vault retries a task failing with it on the back-off
	// schedule (recoverable); otherwise the job fails at once.
	Retried bool
}

// Errors is every user-visible error, by area.
var Errors = []ErrorInfo{
	// The API and the portal.
	{Code: "validation_failed", Where: "API", Status: 400, Message: "The request has invalid fields.", Cause: "A field is missing, malformed or out of range; details.fields names each.", Action: "Correct the named fields and send the request again."},
	{Code: "invalid_json", Where: "API", Status: 400, Message: "The body is not valid JSON of the expected shape.", Cause: "A syntax error, or a value of the wrong type.", Action: "Send the body as the OpenAPI document (/api/v1/openapi.json) describes."},
	{Code: "unknown_field", Where: "API", Status: 400, Message: "The body has a field the API does not know.", Cause: "A typo, or a field of another version.", Action: "Remove or rename the field; the OpenAPI document lists the fields."},
	{Code: "bad_request", Where: "API", Status: 400, Message: "The request could not be read.", Cause: "A malformed request line, query or form.", Action: "Check the request; the API takes JSON bodies and query parameters as documented."},
	{Code: "body_too_large", Where: "API", Status: 413, Message: "The request body is larger than the vault accepts (1 MiB).", Cause: "An oversized upload or a runaway client.", Action: "Send a smaller body."},
	{Code: "unsupported_media_type", Where: "API", Status: 415, Message: "The body is not application/json.", Cause: "A missing or wrong Content-Type header.", Action: "Send Content-Type: application/json."},
	{Code: "unauthenticated", Where: "API", Status: 401, Message: "Log in first.", Cause: "No session or token, or an expired or revoked one.", Action: "Log in, or create a new API token under Account."},
	{Code: "bad_credentials", Where: "API", Status: 401, Message: "The user name or password is wrong.", Cause: "A typo, or a changed password.", Action: "Try again; an Owner can reset the password under Users."},
	{Code: "token_invalid", Where: "API", Status: 401, Message: "The API token is unknown, expired or revoked.", Cause: "The token was revoked or its expiry passed.", Action: "Create a new token under Account → Tokens."},
	{Code: "too_many_login_attempts", Where: "API", Status: 429, Message: "Too many failed logins for this user from this address, or across the vault.", Cause: "Repeated wrong passwords (perhaps an attack): 10 in 15 minutes for one user from one address lock that pair only; many failures across the vault slow every login for seconds.", Action: "Wait for the time the message and the Retry-After header give, then log in with the right password; an Owner can reset a forgotten one."},
	{Code: "too_many_live_pages", Where: "API", Status: 429, Message: "Too many live pages are open in this session.", Cause: "Each open page of the portal that updates itself keeps a stream open; a session may keep 8.", Action: "Close some of the portal's tabs and reload this one; a page without its stream still shows what it showed when it loaded."},
	{Code: "forbidden", Where: "API", Status: 403, Message: "Your role does not allow this.", Cause: "The route needs a higher role (Reader < Operator < Contributor < Owner).", Action: "Ask an Owner for the role, or for the change."},
	{Code: "csrf_invalid", Where: "API", Status: 403, Message: "The form's security token is missing or stale.", Cause: "The page was open for long, or was submitted from elsewhere.", Action: "Reload the page and submit the form again."},
	{Code: "not_found", Where: "API", Status: 404, Message: "No such object.", Cause: "A wrong id, or the object was deleted.", Action: "List the objects to find the right id."},
	{Code: "route_not_found", Where: "API", Status: 404, Message: "There is no page or API call at this address.", Cause: "A typo in the path, or a call of another version.", Action: "Check the path against the OpenAPI document."},
	{Code: "method_not_allowed", Where: "API", Status: 405, Message: "This address does not accept this HTTP method.", Cause: "For example a PUT where the API takes PATCH.", Action: "Use the method the OpenAPI document gives."},
	{Code: "conflict", Where: "API", Status: 409, Message: "The change conflicts with the current state.", Cause: "Another change was made at the same time.", Action: "Reload the object and try again."},
	{Code: "name_taken", Where: "API", Status: 409, Message: "Another object of this kind has that name.", Cause: "Names are unique per kind.", Action: "Choose another name."},
	{Code: "last_owner", Where: "API", Status: 409, Message: "The last Owner cannot be removed or demoted.", Cause: "The vault always keeps one Owner.", Action: "Make another user Owner first."},
	{Code: "site_has_hosts", Where: "API", Status: 409, Message: "A site with hosts cannot be deleted.", Cause: "Hosts still belong to it.", Action: "Remove its hosts first."},
	{Code: "policy_in_use", Where: "API", Status: 409, Message: "A policy that protects VMs cannot be deleted.", Cause: "Protected VMs use it.", Action: "Disable their protection or protect them with another policy first."},
	{Code: "target_in_use", Where: "API", Status: 409, Message: "A target in use cannot be deleted or change kind.", Cause: "Protected VMs replicate to it.", Action: "Disable their protection first, or create a new target."},
	{Code: "already_protected", Where: "API", Status: 409, Message: "The VM is already protected, or its replica data is being deleted.", Cause: "A protection exists for it.", Action: "Disable its protection first (and wait for the Disable protection job), then protect it again."},
	{Code: "partial_replica", Where: "API", Status: 409, Message: "A failed Enable protection had begun writing the VM's replica to its target.", Cause: "Another target was chosen for the retry; the vault does not leave a partial replica behind unasked.", Action: "Retry with the same target, or disable protection (keeping or deleting the partial replica), then enable it to the other target."},
	{Code: "vm_has_no_disks", Where: "API", Status: 409, Message: "The host reports no disk for this VM.", Cause: "The VM has no disk the driver can read.", Action: "Add a disk to the VM, or wait for the next inventory."},
	{Code: "vm_not_found", Where: "API", Status: 409, Message: "The host no longer reports this VM.", Cause: "The VM was deleted or moved on its host.", Action: "Check the VM on its host; disable its protection if it is gone for good."},
	{Code: "host_removed", Where: "API", Status: 409, Message: "The VM's host was removed from the vault.", Cause: "An operator removed the host.", Action: "Register the host again with a new registration key."},
	{Code: "invalid_protection_state", Where: "API", Status: 409, Message: "The VM's protection state does not allow this.", Cause: "For example a resync of a VM that is still enabling protection.", Action: "Wait for the running job to end, or follow the state's next step."},
	{Code: "host_has_protected_vms", Where: "API", Status: 409, Message: "A host whose VMs are protected cannot be removed.", Cause: "Its agent runs their replication; without it their cycles could never run.", Action: "Disable protection of the VMs the message names (keeping or deleting their replica data), then remove the host."},
	{Code: "replica_location_claimed", Where: "API", Status: 409, Message: "Another protected VM already replicates to this location.", Cause: "Two targets name the same directory, and a VM there has the same replica name.", Action: "Protect the VM to another target, or disable the other protection first."},
	{Code: "replication_busy", Where: "API", Status: 409, Message: "A replication task of this VM is running.", Cause: "A cycle or resync is in progress.", Action: "Wait for it to end, then try again."},
	{Code: "replication_paused", Where: "API", Status: 409, Message: "Replication of the VM is paused.", Cause: "A user paused it (the VM's health names who and when); no cycle, resync or Replicate now starts while it is paused.", Action: "Resume replication (the VM page's Resume button, or POST /api/v1/vms/{id}/resume), then try again."},
	{Code: "target_change_not_supported", Where: "API", Status: 409, Message: "The protection cannot change target this way.", Cause: "A policy change (PUT /vms/{id}/protection) keeps the target; a move (POST /vms/{id}/protection/move) is built between directory targets only.", Action: "Move the VM with the Move form or POST …/protection/move; to or from Azure Blob storage, disable protection (keeping the data) and enable it to the new target, which copies the VM again."},
	{Code: "not_paused", Where: "API", Status: 409, Message: "Replication of the VM is not paused.", Cause: "It was never paused, or it was resumed already.", Action: "None: its cycles run at the policy's copy frequency."},
	{Code: "job_ended", Where: "API", Status: 409, Message: "The job has ended; it cannot be cancelled.", Cause: "It succeeded, failed or was cancelled already.", Action: "None."},
	{Code: "not_protected", Where: "API", Status: 409, Message: "The VM is not protected.", Cause: "Failover needs a protected VM with recovery points.", Action: "Enable protection and wait for the first recovery point."},
	{Code: "no_recovery_point", Where: "API", Status: 409, Message: "The VM has no recovery point to recover from.", Cause: "Initial replication has not finished, or no point matches the choice (for example no app-consistent point yet).", Action: "Wait for a point, or choose another kind of point."},
	{Code: "inconsistent_point", Where: "API", Status: 409, Message: "The chosen kind of point would be one labelled inconsistent.", Cause: "Its disks were read while the guest wrote; it may not boot or may hold torn writes.", Action: "Choose a crash- or app-consistent point, or name the inconsistent point by its id to accept it."},
	{Code: "already_failed_over", Where: "API", Status: 409, Message: "The VM is failed over already.", Cause: "A failover succeeded and was not committed or undone.", Action: "Commit it, or change its recovery point."},
	{Code: "failover_running", Where: "API", Status: 409, Message: "A failover or test failover of this VM is running.", Cause: "Its job has not ended.", Action: "Wait for the job to end (or cancel it), then try again."},
	{Code: "test_failover_exists", Where: "API", Status: 409, Message: "The VM has a test failover that was not cleaned up.", Cause: "Its test VM still exists on the recovery host.", Action: "Run Cleanup test failover first."},
	{Code: "no_test_failover", Where: "API", Status: 409, Message: "The VM has no test failover to clean up.", Cause: "None was run, or it was cleaned up already.", Action: "None."},
	{Code: "recovery_host_disconnected", Where: "API", Status: 409, Message: "The recovery host is not connected.", Cause: "Its agent has missed its heartbeats, or the host was removed.", Action: "Start its agent, or choose a connected host."},
	{Code: "instant_not_supported", Where: "API", Status: 409, Message: "The recovery host cannot start the VM before its disks are copied.", Cause: "Instant failover needs a recovery host whose agent runs the qemu driver, and a new VM (not a failback into the original VM's disks).", Action: "Fail over without instant, or choose a qemu recovery host."},
	{Code: "recovery_host_unsupported", Where: "API", Status: 409, Message: "The recovery host's agent cannot recover VMs.", Cause: "It is a version without the recovery tasks.", Action: "Upgrade the agent on that host, or choose another."},
	{Code: "recovery_vm_exists", Where: "API", Status: 409, Message: "The recovery host already has a VM of that name.", Cause: "An earlier failover or test failover left it, or another VM has the name.", Action: "Remove or rename it on that host, or choose another recovery host."},
	{Code: "recovered_vm_not_listed", Where: "API", Status: 409, Message: "The recovery host has not listed the recovered VM yet.", Cause: "Its agent reports its inventory every minute or so after a change.", Action: "Wait a minute and re-protect again; check the recovery host's VMs if it persists."},
	{Code: "plan_running", Where: "API", Status: 409, Message: "The recovery plan is running.", Cause: "A run of it has not ended; its steps name the plan's groups and actions.", Action: "Wait for the plan's job to end, or cancel it, then change the plan."},
	{Code: "plan_empty", Where: "API", Status: 409, Message: "The recovery plan has no VM.", Cause: "Its groups hold no VM.", Action: "Add VMs to the plan's groups, then run it."},
	{Code: "plan_vms_not_ready", Where: "API", Status: 409, Message: "Some VMs of the plan cannot take part in the operation.", Cause: "They are not protected, or in a state the operation does not apply to; the message names each.", Action: "Fix them, or run the plan with skip_ineligible to leave them out."},
	{Code: "job_not_waiting", Where: "API", Status: 409, Message: "The job is not waiting for input.", Cause: "Only a job whose manual action waits can be resumed.", Action: "None."},
	{Code: "move_abandoned", Where: "task", Message: "The move to another target was abandoned after its copy.", Cause: "A failover began, or a recovery was reading the VM's points, while the new target was seeded; the VM stays on its old target with its points.", Action: "Move the VM again once the failover or recovery has ended."},
	{Code: "plan_vm_failed", Where: "task", Message: "A VM's job of a recovery plan failed, or could not start.", Cause: "The message names each VM with its job's error.", Action: "Open the VM jobs, fix the cause, then run the plan again."},
	{Code: "nothing_to_commit", Where: "API", Status: 409, Message: "There is no failover to commit.", Cause: "The VM is not failed over (or its failover is committed already).", Action: "None."},
	{Code: "job_not_restartable", Where: "API", Status: 409, Message: "Only a failed job of a recovery operation can be restarted.", Cause: "The job did not fail, or it is of a kind that is started again from its button.", Action: "Start the operation again from the VM page."},
	{Code: "alert_not_active", Where: "API", Status: 409, Message: "Only an active alert can be acknowledged.", Cause: "It was acknowledged or resolved already.", Action: "None; resolve it when the condition is dealt with."},
	{Code: "alert_resolved", Where: "API", Status: 409, Message: "The alert is resolved already.", Cause: "Someone resolved it, or its condition ended.", Action: "None."},
	{Code: "agents_disabled", Where: "API", Status: 409, Message: "The agent endpoint is off on this vault.", Cause: "The vault runs without its agent CA.", Action: "Start the vault with its data directory intact (data/tls)."},
	{Code: "target_not_azure", Where: "agent endpoint", Status: 409, Message: "The task's target is not Azure Blob storage; it needs no SAS.", Cause: "An agent asked for storage credentials for a directory target.", Action: "Upgrade the agent; this is a bug if it persists."},
	{Code: "timeout", Where: "API", Status: 503, Message: "The vault took too long to answer.", Cause: "A slow database or a very large request.", Action: "Try again; check the database if it persists."},
	{Code: "unavailable", Where: "API", Status: 503, Message: "The vault is busy.", Cause: "It is shutting down or overloaded.", Action: "Try again in a moment."},
	{Code: "internal_error", Where: "API", Status: 500, Message: "The vault failed to handle the request.", Cause: "A bug or a database failure; the vault's log has it under the request id.", Action: "Report it with the request id from the X-Request-Id header."},

	// The agent endpoint (what agents see; they say so in their logs).
	{Code: "invalid_request", Where: "agent endpoint", Status: 400, Message: "The agent's request is malformed.", Cause: "An agent of another version, or a bug.", Action: "Upgrade the agent to the vault's version."},
	{Code: "invalid_csr", Where: "agent endpoint", Status: 400, Message: "The agent's certificate request is not valid.", Cause: "A corrupt state directory or a bug.", Action: "Register the agent again."},
	{Code: "invalid_inventory", Where: "agent endpoint", Status: 400, Message: "The agent's inventory is not valid.", Cause: "A VM or disk the vault cannot record (a bad name or size).", Action: "Check the VM directory the message names."},
	{Code: "invalid_result", Where: "agent endpoint", Status: 400, Message: "The agent's task result is not valid.", Cause: "A bug in the agent.", Action: "Upgrade the agent."},
	{Code: CodeRegistrationKey, Where: "agent endpoint", Status: 401, Message: "The registration key is unknown, used or expired.", Cause: "Keys are one-time and expire.", Action: "Download a new key from the site's page and register again."},
	{Code: CodeIncompatibleProtocol, Where: "agent endpoint", Status: 400, Message: "The agent speaks another protocol version.", Cause: "The agent and the vault are of different releases.", Action: "Upgrade the agent (or the vault) so both speak the same version."},
	{Code: "task_not_found", Where: "agent endpoint", Status: 404, Message: "The host has no such task.", Cause: "The task was deleted or belongs to another host.", Action: "None: the agent drops it."},
	{Code: CodeLeaseLost, Where: "agent endpoint", Status: 409, Message: "The task is no longer leased to this host.", Cause: "It was cancelled, finished, or its lease expired while the agent was away.", Action: "None: the agent drops it; the vault runs it again if needed."},

	// Tasks: a job step's error, a VM's last error.
	{Code: CodePrerequisitesFailed, Where: "task", Message: "A prerequisite of protection failed.", Cause: "A disk is unreadable, the target is not reachable or writable, or space is short; the message lists which.", Action: "Fix what the message lists, then enable protection again."},
	{Code: CodeDiskUnreadable, Where: "task", Message: "A source disk cannot be read.", Cause: "The disk file was removed, its permissions changed, or an I/O error.", Action: "Check the disk named in the message on the host; the cycle is retried.", Retried: true},
	{Code: CodeResyncRequired, Where: "task", Message: "So much of a disk changed since the last cycle that a resynchronization is needed.", Cause: "Pending changes reached 50 % of a disk (a bulk write, a restore, a defragmentation).", Action: "None: the resync starts by itself in the policy's resync window; press Resynchronize on the VM page to start it now."},
	{Code: CodeDiskResized, Where: "task", Message: "A source disk shrank.", Cause: "The disk was made smaller on the host (a grown disk is followed by its replica).", Action: "A replica cannot shrink: disable protection (deleting the data) and enable it again."},
	{Code: CodeReplicaMissing, Where: "task", Message: "The VM's replica (container or blob) is gone from the storage.", Cause: "Someone deleted it on the storage account.", Action: "Disable protection and enable it again to make a new replica."},
	{Code: CodeReplicaMismatch, Where: "task", Message: "A recovery point does not match its recorded hashes.", Cause: "The storage changed replica blocks (bit rot, tampering, a faulty NAS).", Action: "Resynchronize the VM (its page's Resynchronize button); the message lists disks and offsets."},
	{Code: CodeReplicaLocked, Where: "task", Message: "Another writer holds the VM's replica.", Cause: "Another task or another agent is writing or reading the same replica right now.", Action: "None: the task is retried; if it persists, check that only one host protects the VM.", Retried: true},
	{Code: CodeReplicaShared, Where: "task", Message: "Two protected VMs share one replica directory.", Cause: "Replicas made before Lifeboat kept them per VM were named after the VM's name on its host, and two hosts have a VM of that name.", Action: "Disable protection of the VMs the message names, deleting their replica data, then enable it again: new replicas are kept per VM."},
	{Code: CodePointNotFound, Where: "task", Message: "The recovery point is no longer on the target.", Cause: "Retention deleted it after the task was queued.", Action: "None: choose a newer recovery point."},
	{Code: CodeTargetUnavailable, Where: "task", Message: "The replica target cannot be reached.", Cause: "A NAS not mounted, a network outage, or the storage endpoint down.", Action: "Bring the target back; the cycle is retried and no change is lost.", Retried: true},
	{Code: CodeTargetNotWritable, Where: "task", Message: "The replica target refuses writes.", Cause: "Permissions of the target directory, or a read-only mount.", Action: "Let the agent's user write to the target directory; the cycle is retried.", Retried: true},
	{Code: CodeTargetFull, Where: "task", Message: "The replica target is full.", Cause: "The directory's filesystem or its quota has no room left.", Action: "Free space on the target or grow it; the task is retried on the back-off schedule and resumes where it stopped.", Retried: true},
	{Code: CodeTargetNotSupported, Where: "task", Message: "The agent cannot write to this kind of target.", Cause: "An agent older than the vault.", Action: "Upgrade the agent."},
	{Code: CodeStorageAccessDenied, Where: "task", Message: "Azure Blob storage refused the credentials.", Cause: "The target's account key is wrong or was rotated, or its SAS lacks permissions.", Action: "Enter the current key (or a new SAS) under Settings → Targets, then retry the job."},
	{Code: CodeStorageSASExpired, Where: "task", Message: "The target's SAS token has expired.", Cause: "A SAS credential was given with an expiry that passed.", Action: "Put a new SAS under Settings → Targets, or use the account key."},
	{Code: CodeStorageThrottled, Where: "task", Message: "Azure Blob storage is busy or failing (503/500).", Cause: "Throttling of the account or a service incident.", Action: "None: the cycle is retried on the back-off schedule.", Retried: true},
	{Code: CodeStorageTimeout, Where: "task", Message: "Azure Blob storage did not answer in time.", Cause: "A slow network or an overloaded account.", Action: "None: the cycle is retried; check the network if it persists.", Retried: true},
	{Code: CodeStorageConflict, Where: "task", Message: "Another writer changed the replica at the same time.", Cause: "Two agents or tools wrote to the same container.", Action: "Make sure one host replicates each VM; the cycle is retried.", Retried: true},
	{Code: CodeStorageUnavailable, Where: "task", Message: "The vault could not reach the storage to create the VM's container.", Cause: "A network outage between the vault and the storage account.", Action: "None: the task is retried.", Retried: true},
	{Code: CodeStorageCredentials, Where: "task", Message: "The agent could not get a SAS from the vault.", Cause: "The vault was unreachable for a moment.", Action: "None: the task is retried.", Retried: true},
	{Code: CodeStorageRejected, Where: "task", Message: "The storage refused a request as invalid.", Cause: "An unsupported storage account type, or a Lifeboat bug.", Action: "Use a general-purpose v2 account with page blobs; report it if it persists."},
	{Code: CodeVMNotFound, Where: "task", Message: "The VM is not on its host any more.", Cause: "The VM's directory was removed or renamed.", Action: "Check the VM on its host; disable its protection if it is gone for good."},
	{Code: CodeInvalidPayload, Where: "task", Message: "The agent cannot read the task.", Cause: "An agent older or newer than the vault.", Action: "Upgrade the agent to the vault's version."},
	{Code: CodeUnknownTaskKind, Where: "task", Message: "The agent does not know this kind of task.", Cause: "An agent older than the vault.", Action: "Upgrade the agent."},
	{Code: CodeAgentUpgradeRequired, Where: "task", Message: "The host's agent is too old for this task.", Cause: "The agent does not list the feature in its heartbeat, so the vault did not send the task.", Action: "Upgrade the agent on the host to the vault's version, then run the job again."},
	{Code: CodeAgentRestarted, Where: "task", Message: "The agent restarted while running the task.", Cause: "A crash, reboot or upgrade of the agent.", Action: "None: tasks that can run again do so.", Retried: true},
	{Code: CodeTaskFailed, Where: "task", Message: "The task failed without a more precise code.", Cause: "An unexpected error in the agent; the message says more.", Action: "Read the message and the agent's log on the host."},
	{Code: CodeLeaseExpired, Where: "task", Message: "The agent stopped reporting on the task.", Cause: "The host went down or lost the network mid-task.", Action: "None: the task runs again when the host is back.", Retried: true},
	{Code: CodeCancelled, Where: "task", Message: "The task was cancelled.", Cause: "An operator cancelled its job.", Action: "None."},
	{Code: CodeProtectionDisabled, Where: "task", Message: "The task was cancelled because protection was disabled.", Cause: "An operator disabled the VM's protection.", Action: "None."},
	{Code: CodeHostRevoked, Where: "task", Message: "The task was cancelled because its host was removed.", Cause: "An operator removed the host from the vault.", Action: "Register the host again to protect its VMs."},
	{Code: CodeVMNotMaterialized, Where: "task", Message: "The VM was not made by a Lifeboat failover, so Lifeboat does not delete it.", Cause: "The VM directory's vm.json does not name the failover that made it (someone replaced or recreated the VM).", Action: "Delete the VM on its host yourself if it is no longer needed; the cleanup then succeeds."},
	{Code: CodeVMWillNotStop, Where: "task", Message: "The VM did not shut down in time; it may still run.", Cause: "The host's stop command failed or timed out (the guest ignored the shutdown).", Action: "Shut the VM down on its host, then restart the job; or run an unplanned failover, which accepts the loss of the last changes."},
	{Code: CodeVMStartFailed, Where: "task", Message: "The recovered VM was created but did not start.", Cause: "The recovery host's start command failed.", Action: "Read the command's output in the job, fix the hypervisor side, then restart the job."},
	{Code: CodeRecoveryHostFull, Where: "task", Message: "The recovery host has no room for the VM's disks.", Cause: "Its VM root's filesystem filled up while the disks were written; nothing of the VM was left behind.", Action: "Free space on the recovery host (or choose another), then restart the job."},
	{Code: CodeFailbackDiskMismatch, Where: "task", Message: "The original VM has a disk the recovery point does not hold, so the failback does not write into it.", Cause: "The disk was removed from (or renamed in) the VM while it was failed over; writing the others would leave the VM with disks from two times.", Action: "Move the disk out of the original VM's directory if it is no longer needed and restart the job, or fail back to another host."},
	{Code: CodeScriptFailed, Where: "task", Message: "A recovery plan's script failed: it exited with a status other than 0, or ran past its timeout.", Cause: "The script's own error; its output's tail is in the message and the job step.", Action: "Fix the script or what it checks on the recovery host, then run the plan again."},
	{Code: CodeVMRunning, Where: "task", Message: "The VM a failback writes into is running.", Cause: "Its disks can be written only while it is off; someone started it after the failover.", Action: "Shut the VM down on its host, then restart the job."},
	{Code: CodeHostDisconnected, Where: "task", Message: "The host stopped answering during a recovery step, so the step did not finish.", Cause: "Its agent died, its machine went down, or it lost the network; a recovery step never waits unseen for it.", Action: "Start the agent (or choose another host) and restart the job: it goes on from this step. A materialize only read the replica; its half-written VM is removed when the agent starts."},
	{Code: CodeRecoveryVMExists, Where: "task", Message: "A VM of that name already exists on the recovery host.", Cause: "An earlier failover or test failover left it, or another VM has the name.", Action: "Remove or rename that VM on the recovery host, or choose another recovery host."},
	{Code: CodeInconsistentPoints, Where: "health", Message: "The VM's recovery points are not crash-consistent.", Cause: "Its disks are read while it runs and writes, with nothing to hold the writes.", Action: "Power the VM off for a consistent point, keep its disks on a filesystem with reflinks (XFS or btrfs), or give the agent a --freeze-command."},
	{Code: CodeReplicaAliased, Where: "task", Message: "The old replica of a move is the new one under another path; nothing was deleted.", Cause: "The two targets' paths name one directory on the host: a symlink, a bind mount, or one share mounted twice.", Action: "Nothing is lost: the VM replicates to the new target. Give targets directories that are really separate; delete the old replica by hand only if it is."},
	{Code: CodeHostDisconnected, Where: "health", Message: "The VM's host is disconnected: no replication cycle runs.", Cause: "Its agent stopped sending heartbeats: stopped, crashed, its machine down or off the network.", Action: "Start the agent on the host (lifeboat-agent run) or bring the machine back; the next cycle then sends what changed meanwhile. If the host is gone for good, fail the VM over."},
	{Code: CodeAppConsistencyMissed, Where: "health", Message: "The policy asks for app-consistent points, but the host makes crash-consistent ones.", Cause: "The host's agent cannot quiesce the VM: filedisk has no --freeze-command, or the QEMU guest runs no qemu-guest-agent, or the freeze failed.", Action: "Give the agent a --freeze-command or run qemu-guest-agent in the guest; or set the policy's app-consistent frequency to 0 if crash-consistent points are enough."},
	{Code: CodeDiskRemoved, Where: "health", Message: "A disk of the VM was removed and is no longer replicated.", Cause: "The disk's image left the VM on its host (or was renamed, which counts as removed and added).", Action: "None if it was meant; the recovery points made before keep the disk until retention removes them."},
	// The vault's start: it refuses a database schema it does not know.
	{Code: CodeSchemaTooNew, Where: "vault", Message: "The vault does not start: the database schema is newer than this vault binary knows. A vault already running when a newer one migrates its database stops leading the scheduler, and its /healthz answers 503 with this code.", Cause: "A newer lifeboat-vault migrated the database (an upgrade rolled back, or an older vault started or left running beside newer ones).", Action: "Run the newer lifeboat-vault (or later) on this database, or restore a backup taken with this version into a new database."},
	{Code: CodeSchemaDiverged, Where: "vault", Message: "The vault does not start: the database's schema has a migration this vault binary does not know.", Cause: "Another build of lifeboat-vault (a development build, or a fork) migrated the database.", Action: "Run the build that migrated it, or restore a backup taken with this version into a new database."},
	{Code: CodeSchemaUnrecognized, Where: "vault", Message: "The vault does not start: the database has vault tables but neither a schema version nor the whole schema of version 1.", Cause: "A vault older than versioned migrations made it, or --db names a database that is not this vault's.", Action: "Point --db (LIFEBOAT_DB) at the vault's database; for an old vault's database, start the last vault before versioned migrations (commit e50ba32) on it once, or restore a backup."},
	{Code: CodeAwaitingHost, Where: "health", Message: "The VM was rebuilt from replica storage; its host has not registered with this vault yet.", Cause: "The vault lost its database and was rebuilt (lifeboat-vault rebuild); no cycle runs until the VM's host registers again and reports the VM.", Action: "Make a registration key for the host's site and run lifeboat-agent register on the host with a new state directory; its VMs are attached again by their id on the host, and replication resumes against the existing replicas. The recovery points can be failed over meanwhile."},
	{Code: CodeReplicaUndescribed, Where: "health", Message: "The VM was rebuilt from replicas that do not say which VM they are.", Cause: "They were written by an agent older than the replica descriptor (vm.json, or the vm.json blob): the VM's name, host, disks and policy are unknown, only its recovery points are.", Action: "Its points can be failed over (the disks are named by their replica ids). To replicate the VM again, protect the VM its host reports to this target; disable this rebuilt protection, keeping its data, once its points are no longer needed."},
	// The command line (lifeboat-vault rebuild).
	{Code: CodeRebuildNotATarget, Where: "command", Message: "The storage given to rebuild from is not a Lifeboat target.", Cause: "The directory does not exist, is not mounted (it lacks the target's .lifeboat-target marker), or is not readable; or the Azure container prefix names no container.", Action: "Mount the share, or correct --from-target (dir:/path, or azure with --account-url, --container and the account key) and run rebuild again."},
	{Code: CodeRebuildNoManifests, Where: "command", Message: "The target holds no recovery point manifest to rebuild from.", Cause: "It is a Lifeboat target, but no VM's replicas on it have a recovery point (they were deleted, or no cycle finished).", Action: "Check that --from-target names the target the VMs were protected to; without points there is nothing to recover, so protect the VMs again instead."},
	{Code: CodeRebuildVaultInUse, Where: "command", Message: "The vault's database already has hosts or protections of its own; rebuild refuses to mix them with rebuilt ones.", Cause: "Rebuild runs into a new vault, before any host registers; or this target was rebuilt already.", Action: "Rebuild into a new data directory (and an empty database), once per target, before registering the hosts."},
}

// LookupError returns the table's entry for code, preferring one of the
// given area ("task" for a job's error).
func LookupError(code, where string) (ErrorInfo, bool) {
	var found ErrorInfo
	ok := false
	for _, e := range Errors {
		if e.Code == code {
			if e.Where == where {
				return e, true
			}
			if !ok {
				found, ok = e, true
			}
		}
	}
	return found, ok
}

// sasSignature matches the signature of a SAS token in a URL or message.
var sasSignature = regexp.MustCompile(`(?i)(sig=)[^&"'\s]+`)

// RedactSAS hides SAS signatures in a text, such as an error that quotes a
// request URL, before it is logged, stored or shown.
func RedactSAS(s string) string { return sasSignature.ReplaceAllString(s, "${1}REDACTED") }
