package models

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseClock parses a wall-clock time "HH:MM" (24-hour) into minutes after
// midnight.
func ParseClock(s string) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	if !ok || !twoDigits(h) || !twoDigits(m) {
		return 0, fmt.Errorf("%q is not a time of day in the form HH:MM", s)
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if err1 != nil || err2 != nil || hh < 0 || hh > 23 || mm < 0 || mm > 59 {
		return 0, fmt.Errorf("%q is not a time of day between 00:00 and 23:59", s)
	}
	return hh*60 + mm, nil
}

// twoDigits is stricter than strconv.Atoi, which would let "+7" or "-0"
// through as an hour.
func twoDigits(s string) bool {
	return len(s) == 2 && s[0] >= '0' && s[0] <= '9' && s[1] >= '0' && s[1] <= '9'
}
