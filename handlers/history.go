package handlers

import (
	"context"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/models"
	"github.com/lifeboat-dr/lifeboat/views"
)

// RPOHistoryJSON is a VM's RPO history over a range, oldest first.
type RPOHistoryJSON struct {
	VMID  string    `json:"vm_id"`
	Range string    `json:"range"`
	From  time.Time `json:"from"`
	To    time.Time `json:"to"`
	// RPOThresholdSeconds is the RPO the VM's health is held to (twice its
	// policy's copy frequency); null when the VM is not protected.
	RPOThresholdSeconds *float64              `json:"rpo_threshold_seconds"`
	Items               []RPOHistoryPointJSON `json:"items"`
}

// RPOHistoryPointJSON is one row of the history: a cycle's end, an RPO
// sample, or (hourly) an hour of them.
type RPOHistoryPointJSON struct {
	Time            time.Time `json:"time"`
	Hourly          bool      `json:"hourly"`
	MaxRPOSeconds   float64   `json:"max_rpo_seconds"`
	RPOSeconds      float64   `json:"rpo_seconds"`
	Cycles          int       `json:"cycles"`
	BytesSent       int64     `json:"bytes_sent"`
	TransferSeconds float64   `json:"transfer_seconds"`
}

func rpoHistoryJSON(vmID string, h *models.VMHistory) RPOHistoryJSON {
	out := RPOHistoryJSON{VMID: vmID, Range: h.Range, From: h.From, To: h.To, Items: make([]RPOHistoryPointJSON, 0, len(h.Points))}
	if h.ThresholdSeconds > 0 {
		t := h.ThresholdSeconds
		out.RPOThresholdSeconds = &t
	}
	for _, p := range h.Points {
		out.Items = append(out.Items, RPOHistoryPointJSON{Time: p.Time, Hourly: p.Hourly, MaxRPOSeconds: p.MaxRPOSeconds, RPOSeconds: p.RPOSeconds,
			Cycles: p.Cycles, BytesSent: p.BytesSent, TransferSeconds: p.TransferSeconds})
	}
	return out
}

// historyRange reads the range query parameter: 24h when absent.
func historyRange(c echo.Context, field string) (string, error) {
	rng := c.QueryParam(field)
	if rng == "" {
		return models.HistoryDay, nil
	}
	if err := oneOf(field, rng, models.HistoryRanges); err != nil {
		return "", err
	}
	return rng, nil
}

// APIRPOHistory answers GET /api/v1/vms/{id}/rpo-history?range=24h|7d.
func (h *Handlers) APIRPOHistory(c echo.Context) error {
	rng, err := historyRange(c, "range")
	if err != nil {
		return err
	}
	hist, err := h.store.RPOHistoryOf(c.Request().Context(), c.Param("id"), rng)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, rpoHistoryJSON(c.Param("id"), hist))
}

// vmHistoryView is the VM page's chart: the range from ?history= (24h
// when absent or unknown: a page never fails on it).
func (h *Handlers) vmHistoryView(ctx context.Context, c echo.Context, vmID string) (views.VMHistoryView, error) {
	rng := c.QueryParam("history")
	if rng != models.HistoryWeek {
		rng = models.HistoryDay
	}
	hist, err := h.store.RPOHistoryOf(ctx, vmID, rng)
	if err != nil {
		return views.VMHistoryView{}, err
	}
	v := views.VMHistoryView{VMID: vmID, Range: rng, Ranges: models.HistoryRanges, From: hist.From, To: hist.To, ThresholdSeconds: hist.ThresholdSeconds}
	for _, p := range hist.Points {
		v.Points = append(v.Points, views.HistoryPoint{Time: p.Time, MaxRPOSeconds: p.MaxRPOSeconds, RPOSeconds: p.RPOSeconds, Cycles: p.Cycles, BytesSent: p.BytesSent})
	}
	return v, nil
}
