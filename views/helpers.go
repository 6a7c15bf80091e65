package views

import (
	"github.com/lifeboat-dr/lifeboat/agentproto"

	"fmt"
	"net/http"
	"strings"
	"time"
)

func statusText(code int) string { return http.StatusText(code) }

// badgeClass maps states and health to a colour class.
func badgeClass(v string) string {
	switch v {
	case "Normal", "Connected", "Succeeded", "Protected", "Resolved", "Passed":
		return "ok"
	case "Warning", "InProgress", "WaitingForInput", "Suspended", "ResyncRequired", "Resynchronizing", "InitialReplication", "EnablingProtection", "Acknowledged":
		return "warn"
	case "Critical", "Failed", "Disconnected", "Active":
		return "bad"
	}
	return "neutral"
}

// stateLabels names the states whose API spelling is not words.
var stateLabels = map[string]string{
	"EnablingProtection":  "Enabling protection",
	"InitialReplication":  "Initial replication",
	"ResyncRequired":      "Resynchronization required",
	"FailingOver":         "Failing over",
	"FailedOver":          "Failed over",
	"Reprotecting":        "Re-protecting",
	"DisablingProtection": "Disabling protection",
	"NotStarted":          "Not started",
	"InProgress":          "In progress",
	"WaitingForInput":     "Waiting for input",
}

// StateLabel names a protection, job, host or health state for people.
func StateLabel(v string) string {
	if l, ok := stateLabels[v]; ok {
		return l
	}
	return v
}

// FormatTime shows a time in UTC, or a dash.
func FormatTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// FormatBytes shows a size in binary units (agentproto.FormatBytes).
func FormatBytes(n int64) string { return agentproto.FormatBytes(n) }

// FormatSeconds shows a duration such as an RPO.
func FormatSeconds(s int64) string {
	if s < 0 {
		return "—"
	}
	return FormatDuration(time.Duration(s) * time.Second)
}

// FormatDuration shows a duration for people, to the two largest units:
// "45 s", "5 min 30 s", "2 h 5 min", "3 d 4 h".
func FormatDuration(d time.Duration) string {
	if d < 0 {
		return "—"
	}
	s := int64(d / time.Second)
	two := func(a int64, ua string, b int64, ub string) string {
		if b == 0 {
			return fmt.Sprintf("%d %s", a, ua)
		}
		return fmt.Sprintf("%d %s %d %s", a, ua, b, ub)
	}
	switch {
	case s < 60:
		return fmt.Sprintf("%d s", s)
	case s < 3600:
		return two(s/60, "min", s%60, "s")
	case s < 86400:
		return two(s/3600, "h", s%3600/60, "min")
	}
	return two(s/86400, "d", s%86400/3600, "h")
}

func joinReasons(r []string) string { return strings.Join(r, "; ") }

func itoa(n int64) string { return fmt.Sprint(n) }
