package views

import (
	"testing"
	"time"
)

func TestFormatRemainingRoundsUpToWholeMinutes(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{20 * time.Second, "less than a minute left"},
		{61 * time.Second, "about 2 min left"},
		{10 * time.Minute, "about 10 min left"},
		{3 * time.Hour, "about 3 h left"},
		{72 * time.Hour, "about 3 days left"},
	} {
		if got := FormatRemaining(c.d); got != c.want {
			t.Errorf("%v: %q, want %q", c.d, got, c.want)
		}
	}
	if got := FormatCopy(100<<20, 1<<30, 10<<20, 92*time.Second); got != "100 MiB of 1.0 GiB at 10.0 MiB/s, about 2 min left" {
		t.Errorf("FormatCopy: %q", got)
	}
}
