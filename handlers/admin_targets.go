package handlers

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/models"
	"github.com/lifeboat-dr/lifeboat/views"
)

func targetForm(t models.Target) views.TargetForm {
	return views.TargetForm{ID: t.ID, Name: t.Name, Kind: t.Kind, AccountURL: t.AccountURL, Container: t.Container,
		CredentialKind: t.CredentialKind, HasCredential: len(t.CredentialSealed) > 0, Path: t.Path, CreatePath: t.CreatePath, Errors: views.FormErrors{}}
}

// readTargetForm reads the posted form. The credential goes only into the
// input, never back into the form view.
func readTargetForm(c echo.Context) (models.TargetInput, views.TargetForm) {
	in := models.TargetInput{
		Name: c.FormValue("name"), Kind: c.FormValue("kind"), AccountURL: c.FormValue("account_url"),
		Container: c.FormValue("container"), CredentialKind: c.FormValue("credential_kind"),
		Credential: c.FormValue("credential"), Path: c.FormValue("path"), CreatePath: c.FormValue("create_path") == "on",
	}
	if in.CredentialKind != models.CredentialSAS {
		in.CredentialKind = models.CredentialAccountKey
	}
	f := views.TargetForm{Name: in.Name, Kind: in.Kind, AccountURL: in.AccountURL, Container: in.Container,
		CredentialKind: in.CredentialKind, Path: in.Path, CreatePath: in.CreatePath, Errors: views.FormErrors{}}
	return in, f
}

// TargetsPage shows GET /targets.
func (h *Handlers) TargetsPage(c echo.Context) error {
	page, err := pageParams(c)
	if err != nil {
		return err
	}
	items, next, err := h.store.ListTargets(c.Request().Context(), page)
	if err != nil {
		return err
	}
	rows := make([]views.TargetRow, 0, len(items))
	for _, t := range items {
		rows = append(rows, views.TargetRow{ID: t.ID, Name: t.Name, Kind: t.Kind, Location: t.Location()})
	}
	return render(c, http.StatusOK, views.TargetsPage(h.page(c, "Storage targets", "targets"), rows, nextHref(c, next)))
}

// NewTargetPage shows GET /targets/new.
func (h *Handlers) NewTargetPage(c echo.Context) error {
	f := views.TargetForm{Kind: models.TargetDirectory, CredentialKind: models.CredentialAccountKey, Errors: views.FormErrors{}}
	if k := c.QueryParam("kind"); k == models.TargetAzureBlob || k == models.TargetDirectory {
		f.Kind = k // the kind links, for a browser without JavaScript
	}
	return render(c, http.StatusOK, views.TargetFormPage(h.page(c, "New storage target", "targets"), f, ""))
}

// CreateTarget handles POST /targets.
func (h *Handlers) CreateTarget(c echo.Context) error {
	in, f := readTargetForm(c)
	t, err := h.store.CreateTarget(c.Request().Context(), actor(c), in)
	if err == nil {
		return h.redirectWithFlash(c, "/targets", fmt.Sprintf("Storage target %q created.", t.Name))
	}
	if err := formErrors(err, f.Errors); err != nil {
		return err
	}
	return render(c, http.StatusBadRequest, views.TargetFormPage(h.page(c, "New storage target", "targets"), f, ""))
}

// TargetPage shows GET /targets/{id} in its edit form.
func (h *Handlers) TargetPage(c echo.Context) error {
	t, err := h.store.GetTarget(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	f := targetForm(*t)
	if k := c.QueryParam("kind"); k == models.TargetAzureBlob || k == models.TargetDirectory {
		f.Kind = k // the kind links, for a browser without JavaScript
	}
	if f.UsedBy, err = h.targetUsedBy(c, t.ID); err != nil {
		return err
	}
	return render(c, http.StatusOK, views.TargetFormPage(h.page(c, "Target "+t.Name, "targets"), f, ""))
}

// UpdateTarget handles POST /targets/{id}.
func (h *Handlers) UpdateTarget(c echo.Context) error {
	ctx := c.Request().Context()
	stored, err := h.store.GetTarget(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	in, f := readTargetForm(c)
	f.ID, f.HasCredential = stored.ID, len(stored.CredentialSealed) > 0
	t, err := h.store.UpdateTarget(ctx, actor(c), stored.ID, in)
	if err == nil {
		return h.redirectWithFlash(c, "/targets", fmt.Sprintf("Storage target %q saved.", t.Name))
	}
	var conflict *models.ConflictError
	if errors.As(err, &conflict) {
		return render(c, http.StatusConflict, views.TargetFormPage(h.page(c, "Target "+stored.Name, "targets"), f, "The target was not saved: "+conflict.Message+"."))
	}
	if err := formErrors(err, f.Errors); err != nil {
		return err
	}
	return render(c, http.StatusBadRequest, views.TargetFormPage(h.page(c, "Target "+stored.Name, "targets"), f, ""))
}

// DeleteTarget handles POST /targets/{id}/delete; a target in use stays and
// its page says why.
func (h *Handlers) DeleteTarget(c echo.Context) error {
	ctx := c.Request().Context()
	t, err := h.store.GetTarget(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	err = h.store.DeleteTarget(ctx, actor(c), t.ID)
	var conflict *models.ConflictError
	if errors.As(err, &conflict) {
		return render(c, http.StatusConflict, views.TargetFormPage(h.page(c, "Target "+t.Name, "targets"), targetForm(*t), "The target was not deleted: "+conflict.Message+"."))
	}
	if err != nil {
		return err
	}
	return h.redirectWithFlash(c, "/targets", fmt.Sprintf("Storage target %q deleted.", t.Name))
}
