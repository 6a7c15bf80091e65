package handlers

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/models"
)

// TargetJSON is replica storage in the API. The credential is write-only:
// an answer says which kind is stored and that there is one, never its value.
type TargetJSON struct {
	ID             string `json:"id"`
	Name           string `json:"name"`
	Kind           string `json:"kind"`
	AccountURL     string `json:"account_url,omitempty"`
	Container      string `json:"container,omitempty"`
	CredentialKind string `json:"credential_kind,omitempty"`
	HasCredential  bool   `json:"has_credential"`
	Path           string `json:"path,omitempty"`
	// CreatePath: a host that lacks the directory may create it; off, the
	// protection check fails there (a typo, a share not mounted).
	CreatePath bool      `json:"create_path"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// TargetInputJSON is the body of create and update. An azure_blob target
// takes account_key or sas; on update, leaving both out keeps the stored one.
type TargetInputJSON struct {
	Name       string `json:"name"`
	Kind       string `json:"kind"`
	AccountURL string `json:"account_url"`
	Container  string `json:"container"`
	AccountKey string `json:"account_key"`
	SAS        string `json:"sas"`
	Path       string `json:"path"`
	CreatePath bool   `json:"create_path"`
}

func targetJSON(t models.Target) TargetJSON {
	return TargetJSON{ID: t.ID, Name: t.Name, Kind: t.Kind, AccountURL: t.AccountURL, Container: t.Container,
		CredentialKind: t.CredentialKind, HasCredential: len(t.CredentialSealed) > 0, Path: t.Path, CreatePath: t.CreatePath,
		CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt}
}

// toInput converts the body; storedKind is the credential kind already
// stored ("" when creating), kept when the body gives no credential.
func (in TargetInputJSON) toInput(storedKind string) (models.TargetInput, error) {
	out := models.TargetInput{Name: in.Name, Kind: in.Kind, AccountURL: in.AccountURL, Container: in.Container, Path: in.Path, CreatePath: in.CreatePath}
	switch {
	case in.AccountKey != "" && in.SAS != "":
		return out, models.Invalid("sas", "give either account_key or sas, not both")
	case in.AccountKey != "":
		out.CredentialKind, out.Credential = models.CredentialAccountKey, in.AccountKey
	case in.SAS != "":
		out.CredentialKind, out.Credential = models.CredentialSAS, in.SAS
	default:
		out.CredentialKind = storedKind
	}
	return out, nil
}

// APIListTargets answers GET /api/v1/targets.
func (h *Handlers) APIListTargets(c echo.Context) error {
	page, err := pageParams(c)
	if err != nil {
		return err
	}
	items, next, err := h.store.ListTargets(c.Request().Context(), page)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, newList(items, next, targetJSON))
}

// APIGetTarget answers GET /api/v1/targets/{id}.
func (h *Handlers) APIGetTarget(c echo.Context) error {
	t, err := h.store.GetTarget(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, targetJSON(*t))
}

// APICreateTarget answers POST /api/v1/targets.
func (h *Handlers) APICreateTarget(c echo.Context) error {
	var body TargetInputJSON
	if err := decodeJSON(c, &body); err != nil {
		return err
	}
	in, err := body.toInput("")
	if err != nil {
		return err
	}
	t, err := h.store.CreateTarget(c.Request().Context(), actor(c), in)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, targetJSON(*t))
}

// APIUpdateTarget answers PUT /api/v1/targets/{id}: the body replaces the
// target, except that an absent credential keeps the stored one.
func (h *Handlers) APIUpdateTarget(c echo.Context) error {
	ctx := c.Request().Context()
	old, err := h.store.GetTarget(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	var body TargetInputJSON
	if err := decodeJSON(c, &body); err != nil {
		return err
	}
	storedKind := ""
	if old.Kind == models.TargetAzureBlob {
		storedKind = old.CredentialKind
	}
	in, err := body.toInput(storedKind)
	if err != nil {
		return err
	}
	t, err := h.store.UpdateTarget(ctx, actor(c), old.ID, in)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, targetJSON(*t))
}

// APIDeleteTarget answers DELETE /api/v1/targets/{id}; a target holding
// replicas is refused with 409 target_in_use.
func (h *Handlers) APIDeleteTarget(c echo.Context) error {
	if err := h.store.DeleteTarget(c.Request().Context(), actor(c), c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
