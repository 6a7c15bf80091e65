package models

import (
	"context"
	"fmt"
	"strings"
	"unicode/utf8"

	"gorm.io/gorm"
)

// MaxPlanVMs is the reference limit of VMs in one recovery plan.
const (
	MaxPlanVMs     = 100
	MaxPlanGroups  = 20
	MaxPlanActions = 20 // per group
)

// PlanInput is a whole recovery plan as the API and the portal edit it:
// saving it replaces the plan's groups, VMs and actions in one transaction.
type PlanInput struct {
	Name        string
	Description string
	Groups      []GroupInput
}

// GroupInput is one group of a plan.
type GroupInput struct {
	Name    string
	VMIDs   []string
	Actions []ActionInput
}

// ActionInput is a pre or post action of a group.
type ActionInput struct {
	Phase        string
	Kind         string
	Name         string
	Script       string
	Instructions string
}

func validatePlan(tx *gorm.DB, in *PlanInput) error {
	v := &ValidationError{}
	in.Name = strings.TrimSpace(in.Name)
	validateName(v, "name", in.Name)
	if utf8.RuneCountInString(in.Description) > 500 {
		v.Add("description", "must be at most 500 characters")
	}
	if len(in.Groups) > MaxPlanGroups {
		v.Add("groups", "a plan has at most %d groups", MaxPlanGroups)
	}
	seen := map[string]string{}
	total := 0
	for gi := range in.Groups {
		g := &in.Groups[gi]
		field := fmt.Sprintf("groups[%d]", gi)
		g.Name = strings.TrimSpace(g.Name)
		if g.Name == "" {
			g.Name = fmt.Sprintf("Group %d", gi+1)
		}
		validateName(v, field+".name", g.Name)
		for _, id := range g.VMIDs {
			if other, dup := seen[id]; dup {
				v.Add(field+".vm_ids", "VM %s is already in %s; a VM fails over once per plan", id, other)
			}
			seen[id] = g.Name
		}
		total += len(g.VMIDs)
		if len(g.Actions) > MaxPlanActions {
			v.Add(field+".actions", "a group has at most %d actions", MaxPlanActions)
		}
		for ai := range g.Actions {
			validateAction(v, fmt.Sprintf("%s.actions[%d]", field, ai), &g.Actions[ai])
		}
	}
	if total > MaxPlanVMs {
		v.Add("groups", "a plan holds at most %d VMs, this one has %d; split it into several plans", MaxPlanVMs, total)
	}
	if len(seen) > 0 {
		ids := make([]string, 0, len(seen))
		for id := range seen {
			ids = append(ids, id)
		}
		var found []string
		if err := tx.Model(&VM{}).Where("id IN ?", ids).Pluck("id", &found).Error; err != nil {
			return err
		}
		ok := map[string]bool{}
		for _, id := range found {
			ok[id] = true
		}
		for gi, g := range in.Groups {
			for _, id := range g.VMIDs {
				if !ok[id] {
					v.Add(fmt.Sprintf("groups[%d].vm_ids", gi), "VM %s does not exist", id)
				}
			}
		}
	}
	return v.Err()
}

func validateAction(v *ValidationError, field string, a *ActionInput) {
	a.Name = strings.TrimSpace(a.Name)
	validateName(v, field+".name", a.Name)
	if a.Phase != PhasePre && a.Phase != PhasePost {
		v.Add(field+".phase", "must be %q or %q", PhasePre, PhasePost)
	}
	a.Script = strings.TrimSpace(a.Script)
	a.Instructions = strings.TrimSpace(a.Instructions)
	switch a.Kind {
	case ActionScript:
		if !strings.HasPrefix(a.Script, "/") {
			v.Add(field+".script", "must be the absolute path of the script on the recovery host")
		}
		a.Instructions = ""
	case ActionManual:
		if a.Instructions == "" {
			v.Add(field+".instructions", "say what the operator must do before the plan goes on")
		} else if utf8.RuneCountInString(a.Instructions) > 2000 {
			v.Add(field+".instructions", "must be at most 2000 characters")
		}
		a.Script = ""
	default:
		v.Add(field+".kind", "must be %q or %q", ActionScript, ActionManual)
	}
}

// ListPlans lists recovery plans with their groups.
func (s *Store) ListPlans(ctx context.Context, p Page) ([]RecoveryPlan, string, error) {
	var out []RecoveryPlan
	next, err := paginate(s.preloadPlan(s.db.WithContext(ctx)).Model(&RecoveryPlan{}), p, false, &out)
	return out, next, err
}

// GetPlan returns one plan with its groups, VMs and actions in order.
func (s *Store) GetPlan(ctx context.Context, id string) (*RecoveryPlan, error) {
	var p RecoveryPlan
	if err := s.preloadPlan(s.db.WithContext(ctx)).First(&p, "id = ?", id).Error; err != nil {
		return nil, translateError(err)
	}
	return &p, nil
}

func (s *Store) preloadPlan(db *gorm.DB) *gorm.DB {
	return db.Preload("Groups", func(db *gorm.DB) *gorm.DB { return db.Order("seq") }).
		Preload("Groups.VMs", func(db *gorm.DB) *gorm.DB { return db.Order("seq") }).
		Preload("Groups.Actions", func(db *gorm.DB) *gorm.DB { return db.Order("phase DESC, seq") })
}

// PlanToInput turns a stored plan back into an editable input.
func PlanToInput(p *RecoveryPlan) PlanInput {
	in := PlanInput{Name: p.Name, Description: p.Description}
	for _, g := range p.Groups {
		gi := GroupInput{Name: g.Name}
		for _, m := range g.VMs {
			gi.VMIDs = append(gi.VMIDs, m.VMID)
		}
		for _, a := range g.Actions {
			gi.Actions = append(gi.Actions, ActionInput{Phase: a.Phase, Kind: a.Kind, Name: a.Name, Script: a.Script, Instructions: a.Instructions})
		}
		in.Groups = append(in.Groups, gi)
	}
	return in
}

// CreatePlan validates and stores a plan.
func (s *Store) CreatePlan(ctx context.Context, a Actor, in PlanInput) (*RecoveryPlan, error) {
	p := &RecoveryPlan{ID: NewID(prefixPlan)}
	err := s.tx(ctx, func(tx *gorm.DB) error {
		if err := validatePlan(tx, &in); err != nil {
			return err
		}
		if err := uniqueName(tx, &RecoveryPlan{}, "", in.Name, "recovery plan"); err != nil {
			return err
		}
		p.Name, p.Description = in.Name, in.Description
		if err := tx.Omit("Groups").Create(p).Error; err != nil {
			return err
		}
		if err := writeGroups(tx, p.ID, in.Groups); err != nil {
			return err
		}
		return s.audit(tx, a, "recovery_plan.create", "recovery_plan", p.ID, p.Name, in)
	})
	if err != nil {
		return nil, err
	}
	return s.GetPlan(ctx, p.ID)
}

// UpdatePlan replaces a plan's name, description and groups.
func (s *Store) UpdatePlan(ctx context.Context, a Actor, id string, in PlanInput) (*RecoveryPlan, error) {
	err := s.tx(ctx, func(tx *gorm.DB) error {
		var p RecoveryPlan
		if err := tx.First(&p, "id = ?", id).Error; err != nil {
			return err
		}
		if err := planNotRunning(tx, id); err != nil {
			return err
		}
		if err := validatePlan(tx, &in); err != nil {
			return err
		}
		if err := uniqueName(tx, &RecoveryPlan{}, id, in.Name, "recovery plan"); err != nil {
			return err
		}
		if err := deleteGroups(tx, id); err != nil {
			return err
		}
		p.Name, p.Description = in.Name, in.Description
		if err := tx.Omit("Groups").Save(&p).Error; err != nil {
			return err
		}
		if err := writeGroups(tx, id, in.Groups); err != nil {
			return err
		}
		return s.audit(tx, a, "recovery_plan.update", "recovery_plan", p.ID, p.Name, in)
	})
	if err != nil {
		return nil, err
	}
	return s.GetPlan(ctx, id)
}

// DeletePlan deletes a plan and its groups.
func (s *Store) DeletePlan(ctx context.Context, a Actor, id string) error {
	return s.tx(ctx, func(tx *gorm.DB) error {
		var p RecoveryPlan
		if err := tx.First(&p, "id = ?", id).Error; err != nil {
			return err
		}
		if err := planNotRunning(tx, id); err != nil {
			return err
		}
		if err := deleteGroups(tx, id); err != nil {
			return err
		}
		if err := tx.Delete(&p).Error; err != nil {
			return err
		}
		return s.audit(tx, a, "recovery_plan.delete", "recovery_plan", p.ID, p.Name, nil)
	})
}

func deleteGroups(tx *gorm.DB, planID string) error {
	var groupIDs []string
	if err := tx.Model(&PlanGroup{}).Where("plan_id = ?", planID).Pluck("id", &groupIDs).Error; err != nil {
		return err
	}
	if len(groupIDs) == 0 {
		return nil
	}
	if err := tx.Where("group_id IN ?", groupIDs).Delete(&PlanGroupVM{}).Error; err != nil {
		return err
	}
	if err := tx.Where("group_id IN ?", groupIDs).Delete(&PlanAction{}).Error; err != nil {
		return err
	}
	return tx.Where("plan_id = ?", planID).Delete(&PlanGroup{}).Error
}

func writeGroups(tx *gorm.DB, planID string, groups []GroupInput) error {
	for gi, g := range groups {
		grp := PlanGroup{ID: NewID(prefixPlanGroup), PlanID: planID, Seq: gi + 1, Name: g.Name}
		if err := tx.Omit("VMs", "Actions").Create(&grp).Error; err != nil {
			return err
		}
		for vi, id := range g.VMIDs {
			if err := tx.Create(&PlanGroupVM{GroupID: grp.ID, VMID: id, Seq: vi + 1}).Error; err != nil {
				return err
			}
		}
		seq := map[string]int{}
		for _, a := range g.Actions {
			seq[a.Phase]++
			act := PlanAction{ID: NewID(prefixPlanAction), GroupID: grp.ID, Phase: a.Phase, Seq: seq[a.Phase], Kind: a.Kind, Name: a.Name, Script: a.Script, Instructions: a.Instructions}
			if err := tx.Create(&act).Error; err != nil {
				return err
			}
		}
	}
	return nil
}

// planNotRunning refuses to change a plan while a run of it has not ended:
// its steps name the plan's groups and actions.
func planNotRunning(tx *gorm.DB, planID string) error {
	var n int64
	if err := tx.Model(&Job{}).Where("target_kind = ? AND target_id = ? AND state IN ?", "recovery_plan", planID,
		[]string{JobNotStarted, JobInProgress, JobWaitingForInput, JobSuspended}).Count(&n).Error; err != nil {
		return err
	}
	if n > 0 {
		return &ConflictError{Code: "plan_running", Message: "the plan is running; wait for its job to end (or cancel it), then change it"}
	}
	return nil
}
