package views

import (
	"fmt"
	"math"
	"time"
)

// FormatCopy says how a running copy goes: how far, how fast and how long
// the rest takes at that speed, in round words ("about 4 min left"), as an
// estimate should be.
func FormatCopy(done, total int64, bytesPerSecond float64, remaining time.Duration) string {
	return fmt.Sprintf("%s of %s at %s/s, %s", FormatBytes(done), FormatBytes(total), FormatBytes(int64(bytesPerSecond)), FormatRemaining(remaining))
}

// FormatRemaining is a time left in round words.
func FormatRemaining(d time.Duration) string {
	switch {
	case d < time.Minute:
		return "less than a minute left"
	case d < 90*time.Minute:
		return fmt.Sprintf("about %d min left", int(math.Ceil(d.Minutes())))
	case d < 48*time.Hour:
		return fmt.Sprintf("about %.0f h left", d.Hours())
	}
	return fmt.Sprintf("about %.0f days left", d.Hours()/24)
}
