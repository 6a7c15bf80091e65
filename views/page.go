// Package views holds the portal's templ components and the typed view
// models they take. Components never see a database struct.
package views

// Page is what the layout needs on every page.
type Page struct {
	Title   string
	Nav     string // the active navigation entry
	User    *PageUser
	CSRF    string
	Flash   string
	Version string
	// RefreshSeconds reloads the page while something runs (a job), so
	// progress shows without JavaScript; with it the page updates in place
	// (data-live elements, static/js/live.js).
	RefreshSeconds int
}

// PageUser is the logged-in user.
type PageUser struct {
	Username string
	Role     string
}

// Can reports whether the user's role is at least role.
func (p Page) Can(role string) bool {
	if p.User == nil {
		return false
	}
	return roleRank(p.User.Role) >= roleRank(role)
}

func roleRank(r string) int {
	switch r {
	case "Reader":
		return 1
	case "Operator":
		return 2
	case "Contributor":
		return 3
	case "Owner":
		return 4
	}
	return 0
}

// FormErrors maps a field name to why its value was refused.
type FormErrors map[string]string

// Option is one choice of a select.
type Option struct {
	Value, Label string
}

// ErrorView is an error page.
type ErrorView struct {
	Status    int
	Code      string
	Message   string
	RequestID string
}

// navItems are the portal's sections, in order.
var navItems = []struct {
	Key, Label, Href, MinRole string
}{
	{"dashboard", "Dashboard", "/", "Reader"},
	{"sites", "Sites and hosts", "/sites", "Reader"},
	{"vms", "Virtual machines", "/vms", "Reader"},
	{"jobs", "Jobs", "/jobs", "Reader"},
	{"alerts", "Alerts", "/alerts", "Reader"},
	{"policies", "Replication policies", "/policies", "Reader"},
	{"targets", "Storage targets", "/targets", "Reader"},
	{"plans", "Recovery plans", "/recovery-plans", "Reader"},
	{"capacity", "Capacity planner", "/capacity", "Reader"},
	{"audit", "Audit log", "/audit", "Contributor"},
	{"users", "Users", "/users", "Owner"},
}
