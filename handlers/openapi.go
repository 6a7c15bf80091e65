package handlers

import (
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/models"
)

// The OpenAPI 3.0 document of /api/v1. Schemas are made from the handlers'
// own JSON types (openapi_schema.go), so a field added to a type appears
// here by itself; the operations are listed by hand below, with the role
// each needs, and web/openapi_test.go checks them against the routes.

// OpenAPIDocument is the root of the document.
type OpenAPIDocument struct {
	OpenAPI    string                      `json:"openapi"`
	Info       OpenAPIInfo                 `json:"info"`
	Servers    []OpenAPIServer             `json:"servers"`
	Security   []map[string][]string       `json:"security"`
	Tags       []OpenAPITag                `json:"tags"`
	Paths      map[string]*OpenAPIPathItem `json:"paths"`
	Components OpenAPIComponents           `json:"components"`
}

// OpenAPIInfo names the API.
type OpenAPIInfo struct {
	Title       string `json:"title"`
	Version     string `json:"version"`
	Description string `json:"description"`
}

// OpenAPIServer is where the paths are rooted.
type OpenAPIServer struct {
	URL string `json:"url"`
}

// OpenAPITag groups operations.
type OpenAPITag struct {
	Name string `json:"name"`
}

// OpenAPIPathItem holds the operations of one path.
type OpenAPIPathItem struct {
	Get    *OpenAPIOperation `json:"get,omitempty"`
	Post   *OpenAPIOperation `json:"post,omitempty"`
	Put    *OpenAPIOperation `json:"put,omitempty"`
	Delete *OpenAPIOperation `json:"delete,omitempty"`
}

// OpenAPIOperation is one method on one path.
type OpenAPIOperation struct {
	OperationID string                      `json:"operationId"`
	Summary     string                      `json:"summary"`
	Description string                      `json:"description"`
	Tags        []string                    `json:"tags"`
	Parameters  []*OpenAPIParameter         `json:"parameters,omitempty"`
	RequestBody *OpenAPIRequestBody         `json:"requestBody,omitempty"`
	Responses   map[string]*OpenAPIResponse `json:"responses"`
	// Security is [] on public operations, overriding the bearer default.
	Security *[]map[string][]string `json:"security,omitempty"`
}

// OpenAPIParameter is a path or query parameter, or a reference to one.
type OpenAPIParameter struct {
	Ref         string  `json:"$ref,omitempty"`
	Name        string  `json:"name,omitempty"`
	In          string  `json:"in,omitempty"`
	Description string  `json:"description,omitempty"`
	Required    bool    `json:"required,omitempty"`
	Schema      *Schema `json:"schema,omitempty"`
}

// OpenAPIRequestBody is a JSON body.
type OpenAPIRequestBody struct {
	Required bool                        `json:"required"`
	Content  map[string]OpenAPIMediaType `json:"content"`
}

// OpenAPIResponse is one answer, or a reference to a shared one.
type OpenAPIResponse struct {
	Ref         string                      `json:"$ref,omitempty"`
	Description string                      `json:"description,omitempty"`
	Content     map[string]OpenAPIMediaType `json:"content,omitempty"`
}

// OpenAPIMediaType holds the schema of a body.
type OpenAPIMediaType struct {
	Schema *Schema `json:"schema"`
}

// OpenAPIComponents are the shared parts.
type OpenAPIComponents struct {
	Schemas         map[string]*Schema               `json:"schemas"`
	Responses       map[string]*OpenAPIResponse      `json:"responses"`
	Parameters      map[string]*OpenAPIParameter     `json:"parameters"`
	SecuritySchemes map[string]OpenAPISecurityScheme `json:"securitySchemes"`
}

// OpenAPISecurityScheme is the bearer token scheme.
type OpenAPISecurityScheme struct {
	Type         string `json:"type"`
	Scheme       string `json:"scheme"`
	Description  string `json:"description"`
	BearerFormat string `json:"bearerFormat,omitempty"`
}

// APIOpenAPI answers GET /api/v1/openapi.json.
func (h *Handlers) APIOpenAPI(c echo.Context) error {
	return c.JSON(http.StatusOK, BuildOpenAPI())
}

// components lists every named schema and the Go type it describes.
func components() []component {
	return []component{
		{Name: "Error", Type: reflect.TypeFor[ErrorBody](), Doc: "Every error answer."},
		{Name: "ErrorObject", Type: reflect.TypeFor[ErrorObject](), Notes: map[string]fieldNote{
			"code":    {Description: "Stable, for programs: validation_failed, unknown_field, invalid_json, not_found, route_not_found, method_not_allowed, unauthenticated, token_invalid, forbidden, body_too_large, unsupported_media_type, last_owner, name conflicts…"},
			"message": {Description: "For people: what happened and what to do."},
		}},
		{Name: "FieldError", Type: reflect.TypeFor[models.FieldError](), Doc: "One invalid field, named as in the API."},
		{Name: "TokenRequest", Type: reflect.TypeFor[TokenRequestJSON](), Input: true, Required: []string{"username", "password"},
			Notes: map[string]fieldNote{"password": {WriteOnly: true}}},
		{Name: "TokenResponse", Type: reflect.TypeFor[TokenResponseJSON](), Doc: "A login token, valid for 24 hours."},
		{Name: "Site", Type: reflect.TypeFor[SiteJSON]()},
		{Name: "RegistrationKey", Type: reflect.TypeFor[agentproto.RegistrationKey](),
			Doc: "The file `lifeboat-agent register --key-file` reads: one host may register with it, until expires_at (at most 5 days). The secret is shown only here."},
		{Name: "RegistrationKeyInput", Type: reflect.TypeFor[RegistrationKeyInputJSON](), Input: true},
		{Name: "JobAccepted", Type: reflect.TypeFor[JobAcceptedJSON](), Doc: "An action started a job; follow it at /jobs/{job_id}."},
		{Name: "ProtectionInput", Type: reflect.TypeFor[ProtectionInputJSON](), Input: true, Required: []string{"policy_id", "target_id"}},
		{Name: "TestFailoverInput", Type: reflect.TypeFor[TestFailoverInputJSON](), Input: true},
		{Name: "FailoverInput", Type: reflect.TypeFor[FailoverInputJSON](), Input: true, Required: []string{"type"},
			Notes: map[string]fieldNote{"type": {Enum: enumOf("planned", "unplanned")}}},
		{Name: "CleanupInput", Type: reflect.TypeFor[CleanupInputJSON](), Input: true},
		{Name: "ChangePointInput", Type: reflect.TypeFor[ChangePointInputJSON](), Input: true, Required: []string{"recovery_point"}},
		{Name: "Recovery", Type: reflect.TypeFor[RecoveryJSON]()},
		{Name: "PlanRunInput", Type: reflect.TypeFor[PlanRunInputJSON](), Input: true, Required: []string{"operation"},
			Notes: map[string]fieldNote{"operation": {Enum: enumOf(models.PlanTestFailover, models.PlanCleanupTestFailover, models.PlanPlannedFailover, models.PlanUnplannedFailover, models.PlanCommit)}}},
		{Name: "ResumeInput", Type: reflect.TypeFor[ResumeInputJSON](), Input: true},
		{Name: "TestFailover", Type: reflect.TypeFor[TestFailoverJSON]()},
		{Name: "Drill", Type: reflect.TypeFor[DrillJSON]()},
		{Name: "Failover", Type: reflect.TypeFor[FailoverJSON](), Notes: map[string]fieldNote{"kind": {Enum: enumOf(models.FailoverPlanned, models.FailoverUnplanned)}}},
		{Name: "RPOHistory", Type: reflect.TypeFor[RPOHistoryJSON](), Doc: "A VM's RPO history over a range."},
		{Name: "Capacity", Type: reflect.TypeFor[CapacityJSON](), Doc: "The capacity planner: each replicating VM's observed churn and the bandwidth it needs to keep its RPO, against its policy's limit; and each host's sum."},
		{Name: "RPOHistoryPoint", Type: reflect.TypeFor[RPOHistoryPointJSON](), Notes: map[string]fieldNote{
			"max_rpo_seconds": {Description: "The worst RPO of the span the row ends: for a cycle, the RPO just before its point landed; for an hour, the hour's."},
			"rpo_seconds":     {Description: "The RPO at time (after the cycle's point landed)."},
			"cycles":          {Description: "Cycles that ended in the row: 1 for a cycle, 0 for an RPO sample, the hour's count for an hourly row."}}},
		{Name: "RecoveryPoint", Type: reflect.TypeFor[RecoveryPointJSON](), Notes: map[string]fieldNote{"consistency": {Enum: enumOf(models.ConsistencyCrash, models.ConsistencyApp, models.ConsistencyInconsistent)}, "capture": {Enum: enumOf("", "freeze", "reflink", "powered_off", "unchanged", "live")}}},
		{Name: "SiteInput", Type: reflect.TypeFor[SiteInputJSON](), Input: true, Required: []string{"name"}},
		{Name: "Host", Type: reflect.TypeFor[HostJSON](), Notes: map[string]fieldNote{"state": {Enum: enumOf(HostStates...)}}},
		{Name: "VM", Type: reflect.TypeFor[VMJSON](), Notes: map[string]fieldNote{
			"power_state":      {Enum: enumOf(models.PowerRunning, models.PowerOff, models.PowerUnknown)},
			"protection_state": {Enum: enumOf(protectionStates()...)},
			"health":           {Enum: enumOf(models.HealthNormal, models.HealthWarning, models.HealthCritical), Description: "Null when the VM is not protected."},
			"rpo_seconds":      {Description: "Seconds since the last recovery point; null when there is none."},
		}},
		{Name: "Disk", Type: reflect.TypeFor[DiskJSON]()},
		{Name: "Job", Type: reflect.TypeFor[JobJSON](), Notes: map[string]fieldNote{"state": {Enum: enumOf(models.JobStates...)}}},
		{Name: "JobTarget", Type: reflect.TypeFor[JobTargetJSON](), Doc: "What a job acts on."},
		{Name: "JobStep", Type: reflect.TypeFor[JobStepJSON](), Notes: map[string]fieldNote{
			"state": {Enum: enumOf(models.JobStates...)}, "progress": {Min: bound(0), Max: bound(100)}}},
		{Name: "JobError", Type: reflect.TypeFor[JobErrorJSON](), Doc: "Why a job failed and what to do."},
		{Name: "Alert", Type: reflect.TypeFor[AlertJSON](), Notes: map[string]fieldNote{"state": {Enum: enumOf(AlertStates...)}}},
		{Name: "AuditEvent", Type: reflect.TypeFor[AuditEventJSON]()},
		{Name: "Policy", Type: reflect.TypeFor[PolicyJSON](), Notes: policyNotes()},
		{Name: "PolicyInput", Type: reflect.TypeFor[PolicyInputJSON](), Input: true, Required: []string{"name"}, Notes: policyNotes(),
			Doc: "Fields left out take the defaults of a new policy on create, and keep their values on update."},
		{Name: "Window", Type: reflect.TypeFor[WindowJSON](), Doc: `A daily window, "HH:MM" to "HH:MM"; it may cross midnight.`},
		{Name: "Bandwidth", Type: reflect.TypeFor[BandwidthJSON](), Doc: "Replication bandwidth limits; 0 means unlimited."},
		{Name: "Target", Type: reflect.TypeFor[TargetJSON](), Notes: map[string]fieldNote{
			"kind":            {Enum: enumOf(models.TargetAzureBlob, models.TargetDirectory)},
			"credential_kind": {Enum: enumOf(models.CredentialAccountKey, models.CredentialSAS)},
		}, Doc: "Replica storage. The credential is never returned; credential_kind and has_credential say what is stored."},
		{Name: "TargetInput", Type: reflect.TypeFor[TargetInputJSON](), Input: true, Required: []string{"name", "kind"}, Notes: map[string]fieldNote{
			"kind":        {Enum: enumOf(models.TargetAzureBlob, models.TargetDirectory)},
			"account_key": {WriteOnly: true, Description: "azure_blob: the storage account key. Give it or sas; on update, leave both out to keep the stored one."},
			"sas":         {WriteOnly: true, Description: "azure_blob: an account SAS token (sv=…&sig=…) that may create containers. With a key the vault signs each agent a SAS for its VM's container alone; with a SAS, agents get this one."},
			"container":   {Description: "azure_blob: the prefix of the containers, at most 36 characters; each protected VM's replicas go to the container CONTAINER-VMID."},
			"path":        {Description: "directory: an absolute path on the hosts."},
		}},
		{Name: "RecoveryPlan", Type: reflect.TypeFor[PlanJSON]()},
		{Name: "PlanGroup", Type: reflect.TypeFor[PlanGroupJSON](), Doc: "VMs of a group fail over in parallel, between its pre and post actions."},
		{Name: "PlanAction", Type: reflect.TypeFor[PlanActionJSON](), Notes: map[string]fieldNote{
			"phase": {Enum: enumOf(models.PhasePre, models.PhasePost)}, "kind": {Enum: enumOf(models.ActionScript, models.ActionManual)}}},
		{Name: "RecoveryPlanInput", Type: reflect.TypeFor[PlanInputJSON](), Input: true, Required: []string{"name"},
			Doc: "groups may be left out on create; PUT replaces the whole plan and needs groups ([] for none)."},
		{Name: "User", Type: reflect.TypeFor[UserJSON](), Notes: map[string]fieldNote{"role": {Enum: enumOf(models.Roles...)}}},
		{Name: "UserInput", Type: reflect.TypeFor[UserInputJSON](), Input: true, Required: []string{"username", "role"}, Notes: map[string]fieldNote{
			"role":     {Enum: enumOf(models.Roles...)},
			"password": {WriteOnly: true, Description: "Required on create, at least 12 characters; on update, leave it out to keep the current one."},
			"username": {Description: "Cannot change on update."},
		}},
		{Name: "APIToken", Type: reflect.TypeFor[APITokenJSON]()},
		{Name: "APITokenInput", Type: reflect.TypeFor[APITokenInputJSON](), Input: true, Required: []string{"name", "expires_in_days"},
			Notes: map[string]fieldNote{"expires_in_days": {Min: bound(1), Max: bound(float64(maxTokenDays))}}},
		{Name: "APITokenCreated", Type: reflect.TypeFor[APITokenCreatedJSON](), Doc: "The token's secret is shown only in this answer."},
	}
}

func policyNotes() map[string]fieldNote {
	return map[string]fieldNote{
		"copy_frequency_seconds":         {Enum: enumOf(models.CopyFrequencies...)},
		"retention_hours":                {Min: bound(0), Max: bound(models.MaxRetentionHours)},
		"app_consistent_frequency_hours": {Min: bound(0), Max: bound(models.MaxAppConsistentHours), Description: "0 turns app-consistent points off; otherwise less than retention_hours."},
		"initial_replication_start":      {Description: "Null for now; otherwise at most 24 hours ahead."},
	}
}

func protectionStates() []string {
	return []string{models.StateUnprotected, models.StateEnablingProtection, models.StateInitialReplication, models.StateProtected,
		models.StateResyncRequired, models.StateResynchronizing, models.StateFailingOver, models.StateFailedOver,
		models.StateCommitted, models.StateReprotecting, models.StateDisablingProtection}
}

// BuildOpenAPI makes the document.
func BuildOpenAPI() *OpenAPIDocument {
	b := &schemaBuilder{names: map[reflect.Type]string{}}
	comps := append(components(), protectionOpsComponents()...)
	for _, c := range comps {
		b.names[c.Type] = c.Name
	}
	schemas := map[string]*Schema{}
	for _, c := range comps {
		schemas[c.Name] = b.component(c)
	}
	schemas["ErrorObject"].Properties["details"] = &Schema{
		Type: "object", AdditionalProperties: true,
		Description: "More about the error; for validation errors, fields lists every invalid field.",
		Properties:  map[string]*Schema{"fields": {Type: "array", Items: schemaRef("FieldError")}},
	}
	for _, list := range []string{"Site", "Host", "VM", "Job", "Alert", "AuditEvent", "Policy", "Target", "RecoveryPlan", "User", "APIToken", "RecoveryPoint"} {
		schemas[list+"List"] = listSchema(list)
	}
	doc := &OpenAPIDocument{
		OpenAPI: "3.0.3",
		Info: OpenAPIInfo{Title: "Lifeboat vault API", Version: Version,
			Description: "Site recovery vault. Authenticate with POST /auth/token, then send \"Authorization: Bearer TOKEN\". " +
				"Bodies are JSON (Content-Type: application/json, at most 1 MiB, unknown fields refused). " +
				"Lists take ?limit= (1–500, default 50) and ?cursor=. Each operation's description names the least role it needs."},
		Servers:  []OpenAPIServer{{URL: "/api/v1"}},
		Security: []map[string][]string{{"bearer": {}}},
		Paths:    map[string]*OpenAPIPathItem{},
		Components: OpenAPIComponents{
			Schemas:   schemas,
			Responses: errorResponses(),
			Parameters: map[string]*OpenAPIParameter{
				"id":     {Name: "id", In: "path", Required: true, Description: "The object's id.", Schema: &Schema{Type: "string"}},
				"limit":  {Name: "limit", In: "query", Description: "Page size, 1 to 500; 50 by default.", Schema: &Schema{Type: "integer", Minimum: bound(1), Maximum: bound(models.MaxPageSize)}},
				"cursor": {Name: "cursor", In: "query", Description: "next_cursor of the previous page.", Schema: &Schema{Type: "string"}},
			},
			SecuritySchemes: map[string]OpenAPISecurityScheme{"bearer": {Type: "http", Scheme: "bearer",
				Description: "A token from POST /auth/token (24 hours) or POST /tokens (up to 365 days)."}},
		},
	}
	seenTags := map[string]bool{}
	for _, op := range operations() {
		item := doc.Paths[op.Path]
		if item == nil {
			item = &OpenAPIPathItem{}
			doc.Paths[op.Path] = item
		}
		o := op.build()
		switch op.Method {
		case http.MethodGet:
			item.Get = o
		case http.MethodPost:
			item.Post = o
		case http.MethodPut:
			item.Put = o
		case http.MethodDelete:
			item.Delete = o
		}
		if !seenTags[op.Tag] {
			seenTags[op.Tag] = true
			doc.Tags = append(doc.Tags, OpenAPITag{Name: op.Tag})
		}
	}
	return doc
}

func errorResponses() map[string]*OpenAPIResponse {
	e := func(desc string) *OpenAPIResponse {
		return &OpenAPIResponse{Description: desc, Content: jsonContent(schemaRef("Error"))}
	}
	return map[string]*OpenAPIResponse{
		"BadRequest":           e("Invalid input: error.details.fields names each invalid field (codes validation_failed, unknown_field, invalid_json)."),
		"Unauthenticated":      e("No token, or an unknown or expired one."),
		"Forbidden":            e("The caller's role is below the one the operation needs."),
		"NotFound":             e("No object with this id (code not_found)."),
		"Conflict":             e("The change clashes with what is stored (e.g. last_owner, site_has_hosts, target_in_use)."),
		"PayloadTooLarge":      e("The body is larger than 1 MiB."),
		"UnsupportedMediaType": e("The body is not sent as application/json."),
		"InternalError":        e("The vault failed; details are in its log under the request id."),
	}
}

func jsonContent(s *Schema) map[string]OpenAPIMediaType {
	return map[string]OpenAPIMediaType{echo.MIMEApplicationJSON: {Schema: s}}
}

// operation is one documented API call.
type operation struct {
	Method, Path, ID, Tag, Summary string
	Role                           string // "" for public
	Query                          []*OpenAPIParameter
	Body                           string // request component, "" for none
	Status                         int
	Answer                         string // response component, "" for no body
	Notes                          string
	Errors                         map[string]string // more error answers: status → shared response
}

func (op operation) build() *OpenAPIOperation {
	o := &OpenAPIOperation{OperationID: op.ID, Summary: op.Summary, Tags: []string{op.Tag}, Responses: map[string]*OpenAPIResponse{}}
	if op.Role == "" {
		o.Description = "Role: none (public)."
		o.Security = &[]map[string][]string{}
	} else {
		o.Description = "Role: " + op.Role + "."
	}
	if op.Notes != "" {
		o.Description += " " + op.Notes
	}
	ref := func(name string) *OpenAPIResponse { return &OpenAPIResponse{Ref: "#/components/responses/" + name} }
	hasID := strings.Contains(op.Path, "{id}")
	if hasID {
		o.Parameters = append(o.Parameters, &OpenAPIParameter{Ref: "#/components/parameters/id"})
		o.Responses["404"] = ref("NotFound")
	}
	if strings.Contains(op.Path, "{point}") {
		o.Parameters = append(o.Parameters, &OpenAPIParameter{Name: "point", In: "path", Required: true,
			Description: "The recovery point's id.", Schema: &Schema{Type: "string"}})
	}
	o.Parameters = append(o.Parameters, op.Query...)
	if strings.HasSuffix(op.Answer, "List") {
		o.Parameters = append(o.Parameters, &OpenAPIParameter{Ref: "#/components/parameters/limit"}, &OpenAPIParameter{Ref: "#/components/parameters/cursor"})
	}
	if len(o.Parameters) > 0 || op.Body != "" {
		o.Responses["400"] = ref("BadRequest")
	}
	if op.Body != "" {
		o.RequestBody = &OpenAPIRequestBody{Required: true, Content: jsonContent(schemaRef(op.Body))}
		o.Responses["413"] = ref("PayloadTooLarge")
		o.Responses["415"] = ref("UnsupportedMediaType")
	}
	if op.Role != "" {
		o.Responses["401"] = ref("Unauthenticated")
		if op.Role != models.RoleReader {
			o.Responses["403"] = ref("Forbidden")
		}
	}
	if op.Method != http.MethodGet && op.Role != "" {
		o.Responses["409"] = ref("Conflict")
	}
	o.Responses["500"] = ref("InternalError")
	for status, name := range op.Errors {
		o.Responses[status] = ref(name)
	}
	ok := &OpenAPIResponse{Description: http.StatusText(op.Status)}
	if op.Answer != "" {
		ok.Content = jsonContent(schemaRef(op.Answer))
	}
	if op.ID == "getOpenAPI" {
		ok.Content = jsonContent(&Schema{Type: "object", Description: "This document.", AdditionalProperties: true})
	}
	o.Responses[strconv.Itoa(op.Status)] = ok
	return o
}

func query(name, desc string, s *Schema) *OpenAPIParameter {
	return &OpenAPIParameter{Name: name, In: "query", Description: desc, Schema: s}
}

func enumString(values ...string) *Schema { return &Schema{Type: "string", Enum: enumOf(values...)} }

// crud lists the five operations of a resource: list, create, get, replace
// and delete. component names the schemas (X, XInput, XList); label is what
// people call one.
func crud(path, tag, component, label, plural, writeRole, readRole string) []operation {
	id := path + "/{id}"
	return []operation{
		{Method: http.MethodGet, Path: path, ID: "list" + plural, Tag: tag, Summary: "List " + strings.ToLower(tag), Role: readRole, Status: 200, Answer: component + "List"},
		{Method: http.MethodPost, Path: path, ID: "create" + component, Tag: tag, Summary: "Create a " + label, Role: writeRole, Body: component + "Input", Status: 201, Answer: component},
		{Method: http.MethodGet, Path: id, ID: "get" + component, Tag: tag, Summary: "Get a " + label, Role: readRole, Status: 200, Answer: component},
		{Method: http.MethodPut, Path: id, ID: "update" + component, Tag: tag, Summary: "Replace a " + label, Role: writeRole, Body: component + "Input", Status: 200, Answer: component},
		{Method: http.MethodDelete, Path: id, ID: "delete" + component, Tag: tag, Summary: "Delete a " + label, Role: writeRole, Status: 204},
	}
}

// operations lists every call under /api/v1 with the least role it needs;
// it must match web/routes.go (web/openapi_test.go checks both ways).
func operations() []operation {
	reader, operator, contributor, owner := models.RoleReader, models.RoleOperator, models.RoleContributor, models.RoleOwner
	get := http.MethodGet
	ops := []operation{
		{Method: http.MethodPost, Path: "/auth/token", ID: "issueToken", Tag: "Auth", Summary: "Log in: trade a username and password for a 24-hour token",
			Body: "TokenRequest", Status: 200, Answer: "TokenResponse", Notes: "Wrong credentials answer 401 bad_credentials.",
			Errors: map[string]string{"401": "Unauthenticated"}},
		{Method: get, Path: "/openapi.json", ID: "getOpenAPI", Tag: "Auth", Summary: "This OpenAPI document", Status: 200},
	}
	ops = append(ops, crud("/sites", "Sites", "Site", "site", "Sites", contributor, reader)...)
	ops = append(ops,
		operation{Method: http.MethodPost, Path: "/sites/{id}/registration-key", ID: "createRegistrationKey", Tag: "Sites",
			Summary: "Issue a one-time registration key for a host agent of this site", Role: contributor, Body: "RegistrationKeyInput", Status: 201, Answer: "RegistrationKey",
			Notes: "The body may be empty; a key is valid for 120 hours unless expires_in_hours says less."},
		operation{Method: http.MethodPost, Path: "/hosts/{id}/check", ID: "checkHost", Tag: "Hosts",
			Summary: "Run the prerequisites check on a host (free space, driver, versions, clock)", Role: contributor, Status: 202, Answer: "JobAccepted"},
		operation{Method: http.MethodDelete, Path: "/hosts/{id}", ID: "deleteHost", Tag: "Hosts",
			Summary: "Remove a host: its certificate is revoked and its unfinished tasks cancelled; its VMs stay, marked missing", Role: contributor, Status: 204},
		operation{Method: http.MethodPost, Path: "/vms/{id}/protection", ID: "enableProtection", Tag: "VMs",
			Summary: "Enable protection: starts the Enable protection job (prerequisites, replicas, initial replication, finalize)", Role: contributor,
			Body: "ProtectionInput", Status: 202, Answer: "JobAccepted"},
		operation{Method: http.MethodDelete, Path: "/vms/{id}/protection", ID: "disableProtection", Tag: "VMs",
			Summary: "Disable protection, keeping the replica data on the target (204) or deleting it with a job (202)", Role: contributor, Status: 204,
			Query: []*OpenAPIParameter{query("replica_data", "keep (default): the replicas stay on the target and the VM is Unprotected at once. delete: the answer is 202 with the \"Disable protection\" job, whose agent task deletes the replicas and their recovery points; the VM is DisablingProtection until it succeeds.", enumString("keep", "delete"))},
			Notes: "With replica_data=delete the answer is 202 with a JobAccepted body."},
		operation{Method: get, Path: "/vms/{id}/recovery-points", ID: "listRecoveryPoints", Tag: "VMs",
			Summary: "List a VM's recovery points, newest first", Role: reader, Status: 200, Answer: "RecoveryPointList"},
		operation{Method: get, Path: "/vms/{id}/rpo-history", ID: "getRPOHistory", Tag: "VMs",
			Summary: "A VM's RPO history and bytes sent per cycle, oldest first", Role: reader, Status: 200, Answer: "RPOHistory",
			Query: []*OpenAPIParameter{query("range", "24h (default): a row per cycle and an RPO sample every 5 minutes without one. 7d: a row per hour (the worst RPO, the cycles' bytes summed).", enumString(models.HistoryRanges...))},
			Notes: "Raw rows are kept for 24 hours, hourly rows for 7 days. 400 validation_failed naming range for another value."},
		operation{Method: http.MethodPost, Path: "/vms/{id}/recovery-points/{point}/verify", ID: "verifyRecoveryPoint", Tag: "VMs",
			Summary: "Verify a recovery point: read it back from storage and check every block against its recorded hash", Role: contributor,
			Status: 202, Answer: "JobAccepted", Notes: "Mismatches fail the job with replica_mismatch, listing disks and offsets, and mark the VM ResyncRequired."},
		operation{Method: http.MethodPost, Path: "/vms/{id}/resync", ID: "resyncVM", Tag: "VMs",
			Summary: "Resynchronize now: repair blocks the storage changed and send every block that differs from the source, then a new point", Role: contributor,
			Status: 202, Answer: "JobAccepted", Notes: "Only for a Protected or ResyncRequired VM with no replication task running (else 409)."},
		operation{Method: http.MethodPost, Path: "/vms/{id}/test-failover", ID: "testFailover", Tag: "Recovery",
			Summary: "Test failover: make <vm>-test from a recovery point on the recovery host and start it isolated; replication goes on", Role: operator,
			Body: "TestFailoverInput", Status: 202, Answer: "JobAccepted",
			Notes: "409 test_failover_exists until the last one is cleaned up; inconsistent_point when only inconsistent points match (name one by id to accept it); recovery_host_disconnected, recovery_host_unsupported, recovery_vm_exists, no_recovery_point, not_protected."},
		operation{Method: http.MethodPost, Path: "/vms/{id}/test-failover/cleanup", ID: "cleanupTestFailover", Tag: "Recovery",
			Summary: "Cleanup test failover: stop and delete the test VM, and record the drill with its notes", Role: operator,
			Body: "CleanupInput", Status: 202, Answer: "JobAccepted", Notes: "409 no_test_failover when there is none."},
		operation{Method: http.MethodPost, Path: "/vms/{id}/failover", ID: "failover", Tag: "Recovery",
			Summary: "Fail over: planned (shut the source down, final cycle, no data lost) or unplanned (from the chosen point)", Role: operator,
			Body: "FailoverInput", Status: 202, Answer: "JobAccepted",
			Notes: "A planned failover fails with vm_will_not_stop, and goes no further, when the source does not shut down. 409 already_failed_over, failover_running, invalid_protection_state, and the recovery host's errors."},
		operation{Method: http.MethodPost, Path: "/vms/{id}/failover/change-point", ID: "changeRecoveryPoint", Tag: "Recovery",
			Summary: "Change the recovery point of a failed-over VM: it is stopped and made again from the chosen point", Role: operator,
			Body: "ChangePointInput", Status: 202, Answer: "JobAccepted", Notes: "Only while FailedOver, before commit."},
		operation{Method: http.MethodPost, Path: "/vms/{id}/failover/commit", ID: "commitFailover", Tag: "Recovery",
			Summary: "Commit a failover: keep the point the VM runs from and delete the older points from the target", Role: operator,
			Status: 202, Answer: "JobAccepted", Notes: "409 nothing_to_commit unless FailedOver. Points newer than the committed one stay until retention removes them."},
		operation{Method: http.MethodPost, Path: "/vms/{id}/reprotect", ID: "reprotectVM", Tag: "Recovery",
			Summary: "Re-protect a committed failover: replicate the recovered VM into the same replicas (only the blocks that differ travel); after a failback, the other way", Role: operator,
			Status: 202, Answer: "JobAccepted", Notes: "Only when Committed. The protection then belongs to the recovered VM; fail over from its page to fail back. 409 recovered_vm_not_listed until the recovery host's inventory lists it."},
		operation{Method: http.MethodPost, Path: "/recovery-plans/{id}/run", ID: "runRecoveryPlan", Tag: "Recovery plans",
			Summary: "Run a recovery plan: test failover, its cleanup, planned or unplanned failover, or commit, group by group", Role: operator,
			Body: "PlanRunInput", Status: 202, Answer: "JobAccepted",
			Notes: "Groups run in order, the VMs of a group in parallel (one job each, with the plan's job as parent), between the group's pre and post actions: scripts run on the recovery host with the context JSON on stdin and in the file LIFEBOAT_CONTEXT names; a manual action makes the job WaitingForInput until POST /jobs/{id}/resume. 409 plan_vms_not_ready names the VMs that cannot take part, unless skip_ineligible."},
		operation{Method: http.MethodPost, Path: "/jobs/{id}/resume", ID: "resumeJob", Tag: "Jobs",
			Summary: "Resume a job waiting for input: the manual action it waits on is done", Role: operator,
			Body: "ResumeInput", Status: 202, Answer: "JobAccepted", Notes: "409 job_not_waiting unless the job is WaitingForInput."},
		operation{Method: http.MethodPost, Path: "/jobs/{id}/restart", ID: "restartJob", Tag: "Jobs",
			Summary: "Restart a failed recovery job from its failed step (the steps that succeeded are not run again)", Role: operator,
			Status: 202, Answer: "JobAccepted", Notes: "409 job_not_restartable for a job that did not fail or is not a recovery job."},
		operation{Method: http.MethodPost, Path: "/jobs/{id}/cancel", ID: "cancelJob", Tag: "Jobs",
			Summary: "Cancel a job: queued tasks end at once, running ones when their agent hears of it", Role: operator, Status: 202, Answer: "JobAccepted",
			Notes: "An Operator may cancel recovery jobs (failover, test failover, commit, re-protect, recovery plans); other jobs need Contributor (403 forbidden)."},
	)
	ops = append(ops,
		operation{Method: get, Path: "/hosts", ID: "listHosts", Tag: "Hosts", Summary: "List hosts", Role: reader, Status: 200, Answer: "HostList",
			Query: []*OpenAPIParameter{query("site_id", "Only hosts of this site.", &Schema{Type: "string"}), query("state", "Only hosts in this state.", enumString(HostStates...))}},
		operation{Method: get, Path: "/hosts/{id}", ID: "getHost", Tag: "Hosts", Summary: "Get a host", Role: reader, Status: 200, Answer: "Host"},
		operation{Method: get, Path: "/vms", ID: "listVMs", Tag: "VMs", Summary: "List virtual machines with their protection", Role: reader, Status: 200, Answer: "VMList",
			Query: []*OpenAPIParameter{query("site_id", "Only VMs of hosts in this site.", &Schema{Type: "string"}),
				query("host_id", "Only VMs of this host.", &Schema{Type: "string"}),
				query("health", "Only VMs with this health; Unprotected selects VMs without protection.", enumString(VMHealthFilters...))}},
		operation{Method: get, Path: "/vms/{id}", ID: "getVM", Tag: "VMs", Summary: "Get a virtual machine", Role: reader, Status: 200, Answer: "VM"},
		operation{Method: get, Path: "/jobs", ID: "listJobs", Tag: "Jobs", Summary: "List jobs, newest first", Role: reader, Status: 200, Answer: "JobList",
			Query: []*OpenAPIParameter{query("state", "Only jobs in this state.", enumString(models.JobStates...)),
				query("type", "Only jobs of this type.", &Schema{Type: "string"}),
				query("since", "Only jobs created at or after this time (RFC 3339).", &Schema{Type: "string", Format: "date-time"}),
				query("until", "Only jobs created before this time (RFC 3339).", &Schema{Type: "string", Format: "date-time"})}},
		operation{Method: get, Path: "/jobs/{id}", ID: "getJob", Tag: "Jobs", Summary: "Get a job with its steps", Role: reader, Status: 200, Answer: "Job"},
		operation{Method: get, Path: "/alerts", ID: "listAlerts", Tag: "Alerts", Summary: "List alerts, newest first", Role: reader, Status: 200, Answer: "AlertList",
			Query: []*OpenAPIParameter{query("state", "Only alerts in this state.", enumString(AlertStates...))}},
		operation{Method: http.MethodPost, Path: "/alerts/{id}/acknowledge", ID: "acknowledgeAlert", Tag: "Alerts",
			Summary: "Acknowledge an active alert: someone is on it; it stays open until resolved", Role: operator, Status: 200, Answer: "Alert",
			Notes: "An alert that is not Active answers 409 alert_not_active."},
		operation{Method: http.MethodPost, Path: "/alerts/{id}/resolve", ID: "resolveAlert", Tag: "Alerts",
			Summary: "Resolve an alert by hand (the vault also resolves alerts whose condition ended)", Role: operator, Status: 200, Answer: "Alert",
			Notes: "A resolved alert answers 409 alert_resolved."},
		operation{Method: get, Path: "/audit", ID: "listAudit", Tag: "Audit", Summary: "List audit events, newest first", Role: contributor, Status: 200, Answer: "AuditEventList",
			Query: []*OpenAPIParameter{query("object_id", "Only events about this object.", &Schema{Type: "string"}),
				query("object_kind", "Only events about objects of this kind: vm, host, site, policy, target, recovery_plan, job, user, token.", &Schema{Type: "string"}),
				query("action", "Only events of this action, such as policy.create.", &Schema{Type: "string"}),
				query("actor", "Only events of this user (system: the vault itself).", &Schema{Type: "string"})},
			Notes: "An unknown query parameter answers 400 validation_failed naming it."},
		operation{Method: get, Path: "/capacity", ID: "getCapacity", Tag: "Capacity", Summary: "The capacity planner: bandwidth each VM needs to keep its RPO, against its policy's limit",
			Role: reader, Status: 200, Answer: "Capacity",
			Notes: "Measured from the delta cycles of the last 24 hours (initial copies and resyncs are not churn); a VM with fewer than 3 is measured: false."},
	)
	ops = append(ops, crud("/policies", "Policies", "Policy", "replication policy", "Policies", contributor, reader)...)
	ops = append(ops, crud("/targets", "Targets", "Target", "replica target", "Targets", contributor, reader)...)
	ops = append(ops, crud("/recovery-plans", "Recovery plans", "RecoveryPlan", "recovery plan", "RecoveryPlans", contributor, reader)...)
	ops = append(ops, crud("/users", "Users", "User", "user", "Users", owner, owner)...)
	ops = append(ops,
		operation{Method: get, Path: "/tokens", ID: "listTokens", Tag: "Tokens", Summary: "List the caller's own API tokens", Role: reader, Status: 200, Answer: "APITokenList"},
		operation{Method: http.MethodPost, Path: "/tokens", ID: "createToken", Tag: "Tokens", Summary: "Create an API token for the caller; its secret is shown once",
			Role: reader, Body: "APITokenInput", Status: 201, Answer: "APITokenCreated"},
		operation{Method: http.MethodDelete, Path: "/tokens/{id}", ID: "deleteToken", Tag: "Tokens", Summary: "Revoke one of the caller's tokens",
			Role: reader, Status: 204, Notes: "Another user's token answers 404."},
	)
	ops = append(ops, protectionOpsOperations()...)
	return ops
}
