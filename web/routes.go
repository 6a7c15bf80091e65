package main

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/agentproto"
	"github.com/lifeboat-dr/lifeboat/handlers"
	"github.com/lifeboat-dr/lifeboat/models"
	"github.com/lifeboat-dr/lifeboat/static"
)

// Minimum roles. Every route names one; "public" routes are few and listed.
const (
	public      = ""
	reader      = models.RoleReader
	operator    = models.RoleOperator
	contributor = models.RoleContributor
	owner       = models.RoleOwner
)

type router struct {
	e    *echo.Echo
	csrf echo.MiddlewareFunc
}

// page adds a portal route: CSRF-checked, and role-checked unless public.
// A page behind a login is never cached (a shared browser's back button,
// a proxy): Cache-Control no-store, as the API sends.
func (r router) page(method, path string, h echo.HandlerFunc, role string) {
	mw := []echo.MiddlewareFunc{r.csrf}
	if role != public {
		mw = append(mw, handlers.Require(role), noStore)
	}
	r.e.Add(method, path, h, mw...)
}

func noStore(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		c.Response().Header().Set("Cache-Control", "no-store")
		return next(c)
	}
}

// api adds a JSON API route under /api/v1, role-checked unless public.
func (r router) api(method, path string, h echo.HandlerFunc, role string) {
	var mw []echo.MiddlewareFunc
	if role != public {
		mw = append(mw, handlers.Require(role))
	}
	r.e.Add(method, "/api/v1"+path, h, mw...)
}

// addRoutes lists every route of the vault, with the least role it needs.
func addRoutes(e *echo.Echo, h *handlers.Handlers, csrf echo.MiddlewareFunc) {
	e.GET("/healthz", h.Healthz)
	// Prometheus: not a portal page nor the API; its own access rule
	// (loopback only, or a scrape token: --metrics).
	e.GET("/metrics", h.Metrics)
	e.StaticFS("/static", static.Files)
	r := router{e: e, csrf: csrf}
	get, post, put, del := http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete

	// Portal.
	r.page(get, "/login", h.LoginPage, public)
	r.page(post, "/login", h.Login, public)
	r.page(post, "/logout", h.Logout, reader)
	r.page(get, "/", h.DashboardPage, reader)

	r.page(get, "/sites", h.SitesPage, reader)
	r.page(get, "/sites/new", h.NewSitePage, contributor)
	r.page(post, "/sites", h.CreateSite, contributor)
	r.page(get, "/sites/:id", h.SitePage, reader)
	r.page(post, "/sites/:id", h.UpdateSite, contributor)
	r.page(post, "/sites/:id/delete", h.DeleteSite, contributor)
	r.page(post, "/sites/:id/registration-key", h.CreateRegistrationKey, contributor)
	r.page(get, "/hosts/:id", h.HostPage, reader)
	r.page(post, "/hosts/:id/check", h.CheckHost, contributor)
	r.page(post, "/hosts/:id/delete", h.DeleteHost, contributor)

	r.page(get, "/alerts", h.AlertsPage, reader)
	r.page(get, "/audit", h.AuditPage, contributor)
	r.page(get, "/capacity", h.CapacityPage, reader)
	r.page(post, "/alerts/:id/acknowledge", h.AcknowledgeAlert, operator)
	r.page(post, "/alerts/:id/resolve", h.ResolveAlert, operator)

	r.page(get, "/vms", h.VMsPage, reader)
	r.page(get, "/vms/:id", h.VMPage, reader)
	r.page(post, "/vms/:id/protection", h.EnableProtection, contributor)
	r.page(post, "/vms/:id/protection/delete", h.DisableProtection, contributor)
	r.page(post, "/vms/:id/recovery-points/:point/verify", h.VerifyRecoveryPoint, contributor)
	r.page(post, "/vms/:id/resync", h.Resync, contributor)
	r.page(post, "/vms/:id/pause", h.PauseReplication, contributor)
	r.page(post, "/vms/:id/resume", h.ResumeReplication, contributor)
	r.page(post, "/vms/:id/protection/policy", h.ChangeVMPolicy, contributor)
	r.page(post, "/vms/:id/protection/move", h.MoveProtection, contributor)
	// A cycle now changes no configuration: an Operator takes a fresh point before a drill or a failover.
	r.page(post, "/vms/:id/replicate-now", h.ReplicateNow, operator)
	// Recovery is the Operator's job: failover and failback, no configuration.
	r.page(post, "/vms/:id/test-failover", h.TestFailover, operator)
	r.page(post, "/vms/:id/test-failover/cleanup", h.CleanupTestFailover, operator)
	r.page(post, "/vms/:id/failover", h.Failover, operator)
	r.page(post, "/vms/:id/failover/change-point", h.ChangeRecoveryPoint, operator)
	r.page(post, "/vms/:id/failover/commit", h.CommitFailover, operator)
	r.page(post, "/vms/:id/reprotect", h.Reprotect, operator)

	r.page(get, "/jobs", h.JobsPage, reader)
	r.page(get, "/jobs/:id", h.JobPage, reader)
	r.page(post, "/jobs/:id/cancel", h.CancelJob, operator) // recovery jobs only, below Contributor
	r.page(post, "/jobs/:id/restart", h.RestartJob, operator)
	r.page(post, "/jobs/:id/resume", h.ResumeJob, operator)

	r.page(get, "/policies", h.PoliciesPage, reader)
	r.page(get, "/policies/new", h.NewPolicyPage, contributor)
	r.page(post, "/policies", h.CreatePolicy, contributor)
	r.page(get, "/policies/:id", h.PolicyPage, reader)
	r.page(post, "/policies/:id", h.UpdatePolicy, contributor)
	r.page(post, "/policies/:id/delete", h.DeletePolicy, contributor)

	r.page(get, "/targets", h.TargetsPage, reader)
	r.page(get, "/targets/new", h.NewTargetPage, contributor)
	r.page(post, "/targets", h.CreateTarget, contributor)
	r.page(get, "/targets/:id", h.TargetPage, reader)
	r.page(post, "/targets/:id", h.UpdateTarget, contributor)
	r.page(post, "/targets/:id/delete", h.DeleteTarget, contributor)

	r.page(get, "/recovery-plans", h.PlansPage, reader)
	r.page(get, "/recovery-plans/new", h.NewPlanPage, contributor)
	r.page(post, "/recovery-plans", h.CreatePlan, contributor)
	r.page(get, "/recovery-plans/:id", h.PlanPage, reader)
	r.page(post, "/recovery-plans/:id", h.UpdatePlan, contributor)
	r.page(post, "/recovery-plans/:id/delete", h.DeletePlan, contributor)
	r.page(post, "/recovery-plans/:id/run", h.RunPlan, operator)
	r.page(post, "/recovery-plans/:id/groups", h.AddPlanGroup, contributor)
	r.page(post, "/recovery-plans/:id/groups/:group/delete", h.DeletePlanGroup, contributor)
	r.page(post, "/recovery-plans/:id/groups/:group/move", h.MovePlanGroup, contributor)
	r.page(post, "/recovery-plans/:id/groups/:group/vms", h.AddPlanVM, contributor)
	r.page(post, "/recovery-plans/:id/groups/:group/vms/:vm/delete", h.RemovePlanVM, contributor)
	r.page(post, "/recovery-plans/:id/groups/:group/actions", h.AddPlanAction, contributor)
	r.page(post, "/recovery-plans/:id/groups/:group/actions/:action/delete", h.RemovePlanAction, contributor)

	r.page(get, "/users", h.UsersPage, owner)
	r.page(get, "/users/new", h.NewUserPage, owner)
	r.page(post, "/users", h.CreateUser, owner)
	r.page(get, "/users/:id", h.UserPage, owner)
	r.page(post, "/users/:id", h.UpdateUser, owner)
	r.page(post, "/users/:id/delete", h.DeleteUser, owner)

	// Live pages' event streams (handlers/events.go): each renders its page.
	r.page(get, "/events/", h.Live(h.DashboardPage), reader)
	r.page(get, "/events/hosts/:id", h.Live(h.HostPage), reader)
	r.page(get, "/events/vms", h.Live(h.VMsPage), reader)
	r.page(get, "/events/vms/:id", h.Live(h.VMPage), reader)
	r.page(get, "/events/jobs", h.Live(h.JobsPage), reader)
	r.page(get, "/events/jobs/:id", h.Live(h.JobPage), reader)

	r.page(get, "/account", h.AccountPage, reader)
	r.page(post, "/account/password", h.ChangeOwnPassword, reader)
	r.page(post, "/account/tokens", h.CreateOwnToken, reader)
	r.page(post, "/account/tokens/:id/delete", h.DeleteOwnToken, reader)

	// JSON API.
	r.api(post, "/auth/token", h.APIIssueToken, public)
	r.api(get, "/openapi.json", h.APIOpenAPI, public)

	r.api(get, "/sites", h.APIListSites, reader)
	r.api(post, "/sites", h.APICreateSite, contributor)
	r.api(get, "/sites/:id", h.APIGetSite, reader)
	r.api(put, "/sites/:id", h.APIUpdateSite, contributor)
	r.api(del, "/sites/:id", h.APIDeleteSite, contributor)
	r.api(post, "/sites/:id/registration-key", h.APICreateRegistrationKey, contributor)

	r.api(get, "/hosts", h.APIListHosts, reader)
	r.api(get, "/hosts/:id", h.APIGetHost, reader)
	r.api(post, "/hosts/:id/check", h.APICheckHost, contributor)
	r.api(del, "/hosts/:id", h.APIDeleteHost, contributor)
	r.api(get, "/vms", h.APIListVMs, reader)
	r.api(get, "/vms/:id", h.APIGetVM, reader)
	r.api(post, "/vms/:id/protection", h.APIEnableProtection, contributor)
	r.api(del, "/vms/:id/protection", h.APIDisableProtection, contributor)
	r.api(get, "/vms/:id/recovery-points", h.APIListRecoveryPoints, reader)
	r.api(get, "/vms/:id/rpo-history", h.APIRPOHistory, reader)
	r.api(post, "/vms/:id/recovery-points/:point/verify", h.APIVerifyRecoveryPoint, contributor)
	r.api(post, "/vms/:id/resync", h.APIResync, contributor)
	r.api(put, "/vms/:id/protection", h.APIUpdateProtection, contributor)
	r.api(post, "/vms/:id/protection/move", h.APIMoveProtection, contributor)
	r.api(post, "/vms/:id/pause", h.APIPauseReplication, contributor)
	r.api(post, "/vms/:id/resume", h.APIResumeReplication, contributor)
	r.api(post, "/vms/:id/replicate-now", h.APIReplicateNow, operator)
	r.api(post, "/vms/:id/test-failover", h.APITestFailover, operator)
	r.api(post, "/vms/:id/test-failover/cleanup", h.APICleanupTestFailover, operator)
	r.api(post, "/vms/:id/failover", h.APIFailover, operator)
	r.api(post, "/vms/:id/failover/change-point", h.APIChangeRecoveryPoint, operator)
	r.api(post, "/vms/:id/failover/commit", h.APICommitFailover, operator)
	r.api(post, "/vms/:id/reprotect", h.APIReprotect, operator)
	r.api(get, "/jobs", h.APIListJobs, reader)
	r.api(get, "/jobs/:id", h.APIGetJob, reader)
	r.api(post, "/jobs/:id/cancel", h.APICancelJob, operator) // recovery jobs only, below Contributor
	r.api(post, "/jobs/:id/restart", h.APIRestartJob, operator)
	r.api(post, "/jobs/:id/resume", h.APIResumeJob, operator)
	r.api(get, "/alerts", h.APIListAlerts, reader)
	r.api(post, "/alerts/:id/acknowledge", h.APIAcknowledgeAlert, operator)
	r.api(post, "/alerts/:id/resolve", h.APIResolveAlert, operator)
	r.api(get, "/audit", h.APIListAudit, contributor)
	r.api(get, "/capacity", h.APICapacity, reader)

	r.api(get, "/policies", h.APIListPolicies, reader)
	r.api(post, "/policies", h.APICreatePolicy, contributor)
	r.api(get, "/policies/:id", h.APIGetPolicy, reader)
	r.api(put, "/policies/:id", h.APIUpdatePolicy, contributor)
	r.api(del, "/policies/:id", h.APIDeletePolicy, contributor)

	r.api(get, "/targets", h.APIListTargets, reader)
	r.api(post, "/targets", h.APICreateTarget, contributor)
	r.api(get, "/targets/:id", h.APIGetTarget, reader)
	r.api(put, "/targets/:id", h.APIUpdateTarget, contributor)
	r.api(del, "/targets/:id", h.APIDeleteTarget, contributor)

	r.api(get, "/recovery-plans", h.APIListPlans, reader)
	r.api(post, "/recovery-plans", h.APICreatePlan, contributor)
	r.api(get, "/recovery-plans/:id", h.APIGetPlan, reader)
	r.api(put, "/recovery-plans/:id", h.APIUpdatePlan, contributor)
	r.api(del, "/recovery-plans/:id", h.APIDeletePlan, contributor)
	r.api(post, "/recovery-plans/:id/run", h.APIRunPlan, operator)

	r.api(get, "/users", h.APIListUsers, owner)
	r.api(post, "/users", h.APICreateUser, owner)
	r.api(get, "/users/:id", h.APIGetUser, owner)
	r.api(put, "/users/:id", h.APIUpdateUser, owner)
	r.api(del, "/users/:id", h.APIDeleteUser, owner)

	r.api(get, "/tokens", h.APIListTokens, reader)
	r.api(post, "/tokens", h.APICreateToken, reader)
	r.api(del, "/tokens/:id", h.APIDeleteToken, reader)

	// Agent endpoint: hosts, not users. Register is authenticated by the
	// registration key's secret; everything else by the host's client
	// certificate (mutual TLS).
	e.POST(agentproto.PathRegister, h.AgentRegister)
	agent := e.Group("/agent/v1", h.AgentHost)
	agent.POST("/renew", h.AgentRenew)
	agent.POST("/heartbeat", h.AgentHeartbeat)
	agent.POST("/poll", h.AgentPoll)
	agent.POST("/inventory", h.AgentInventory)
	agent.POST("/tasks/:id/progress", h.AgentTaskProgress)
	agent.POST("/tasks/:id/result", h.AgentTaskResult)
	agent.POST("/tasks/:id/storage-credentials", h.AgentStorageCredentials)
}
