package models

import (
	"crypto/rand"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
)

// idEntropy makes ids minted in the same millisecond increase, so that
// ordering by id stays ordering by creation even for quick successive writes.
var idEntropy = &ulid.LockedMonotonicReader{MonotonicReader: ulid.Monotonic(rand.Reader, 0)}

// NewID returns an opaque, time-ordered identifier with a short prefix that
// says what kind of object it names ("pol_01j…"). Ordering by id is ordering
// by creation time, which keeps cursor pagination simple and stable.
func NewID(prefix string) string {
	id := ulid.MustNew(ulid.Timestamp(time.Now()), idEntropy)
	return prefix + "_" + strings.ToLower(id.String())
}

// ID prefixes, one per kind of object. They are part of the API's look, so
// they never change.
const (
	prefixSite            = "site"
	prefixHost            = "host"
	prefixRegistrationKey = "rk"
	prefixVM              = "vm"
	prefixDisk            = "disk"
	prefixPolicy          = "pol"
	prefixTarget          = "tgt"
	prefixProtection      = "prot"
	prefixReplicaDisk     = "rdisk"
	prefixRecoveryPoint   = "rp"
	prefixJob             = "job"
	prefixJobStep         = "step"
	prefixTask            = "task"
	prefixPlan            = "plan"
	prefixPlanGroup       = "grp"
	prefixPlanAction      = "act"
	prefixUser            = "user"
	prefixToken           = "tok"
	prefixSession         = "sess"
	prefixAudit           = "aud"
	prefixAlert           = "alert"
	prefixCleanup         = "cleanup"
	prefixHistory         = "rpoh"
)
