package qemutest

import (
	"testing"

	"github.com/lifeboat-dr/lifeboat/agent/internal/guesttest"
)

// The real Linux guest of package guesttest, for tests outside agent/
// (the vault's end-to-end tests), which Go's internal rule keeps from
// importing it: see guesttest for what each is.
type (
	Guest        = guesttest.Guest
	GuestOptions = guesttest.Options
	Ingredients  = guesttest.Ingredients
)

// Serial console lines of the guest.
const (
	ReadyLine   = guesttest.ReadyLine
	DoneLine    = guesttest.DoneLine
	StoppedLine = guesttest.StoppedLine
)

// StartGuest boots the real guest (guesttest.Start).
func StartGuest(t testing.TB, opts GuestOptions) *Guest { return guesttest.Start(t, opts) }

// RequireGuest finds the guest's ingredients or skips the test
// (guesttest.Require).
func RequireGuest(t testing.TB) *Ingredients { return guesttest.Require(t) }

// Records parses the guest's records from a raw disk (guesttest.Records).
func Records(disk []byte) []int { return guesttest.Records(disk) }

// CheckPrefix checks that the records are a gap-free prefix holding every
// acknowledged one (guesttest.CheckPrefix).
func CheckPrefix(recs []int, acked int) (int, error) { return guesttest.CheckPrefix(recs, acked) }
