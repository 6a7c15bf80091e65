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
	return (time.Duration(s) * time.Second).String()
}

func joinReasons(r []string) string { return strings.Join(r, "; ") }

func itoa(n int64) string { return fmt.Sprint(n) }
