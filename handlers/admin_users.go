package handlers

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/models"
	"github.com/lifeboat-dr/lifeboat/views"
)

// UsersPage shows GET /users.
func (h *Handlers) UsersPage(c echo.Context) error {
	page, err := pageParams(c)
	if err != nil {
		return err
	}
	items, next, err := h.store.ListUsers(c.Request().Context(), page)
	if err != nil {
		return err
	}
	rows := make([]views.UserRow, 0, len(items))
	for _, u := range items {
		rows = append(rows, views.UserRow{ID: u.ID, Username: u.Username, Role: u.Role, Created: views.FormatTime(&u.CreatedAt)})
	}
	return render(c, http.StatusOK, views.UsersPage(h.page(c, "Users", "users"), rows, nextHref(c, next)))
}

// NewUserPage shows GET /users/new.
func (h *Handlers) NewUserPage(c echo.Context) error {
	f := views.UserForm{Role: models.RoleReader, Errors: views.FormErrors{}}
	return render(c, http.StatusOK, views.UserFormPage(h.page(c, "New user", "users"), f, ""))
}

// CreateUser handles POST /users.
func (h *Handlers) CreateUser(c echo.Context) error {
	in := models.UserInput{Username: c.FormValue("username"), Password: c.FormValue("password"), Role: c.FormValue("role")}
	f := views.UserForm{Username: in.Username, Role: in.Role, Errors: views.FormErrors{}}
	u, err := h.store.CreateUser(c.Request().Context(), actor(c), in)
	if err == nil {
		return h.redirectWithFlash(c, "/users", fmt.Sprintf("User %q created with role %s.", u.Username, u.Role))
	}
	if err := formErrors(err, f.Errors); err != nil {
		return err
	}
	return render(c, http.StatusBadRequest, views.UserFormPage(h.page(c, "New user", "users"), f, ""))
}

// UserPage shows GET /users/{id}.
func (h *Handlers) UserPage(c echo.Context) error {
	u, err := h.store.GetUser(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	f := views.UserForm{ID: u.ID, Username: u.Username, Role: u.Role, Errors: views.FormErrors{}}
	return render(c, http.StatusOK, views.UserFormPage(h.page(c, "User "+u.Username, "users"), f, ""))
}

// UpdateUser handles POST /users/{id}: role and, if given, a new password.
func (h *Handlers) UpdateUser(c echo.Context) error {
	ctx := c.Request().Context()
	stored, err := h.store.GetUser(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	in := models.UserInput{Username: stored.Username, Password: c.FormValue("password"), Role: c.FormValue("role")}
	f := views.UserForm{ID: stored.ID, Username: stored.Username, Role: in.Role, Errors: views.FormErrors{}}
	u, err := h.store.UpdateUser(ctx, actor(c), stored.ID, in)
	if err == nil {
		return h.redirectWithFlash(c, "/users", fmt.Sprintf("User %q saved.", u.Username))
	}
	return h.userRefused(c, err, f)
}

// userRefused shows a refused user form: field errors inline, a conflict
// (the last Owner) as the form's message.
func (h *Handlers) userRefused(c echo.Context, err error, f views.UserForm) error {
	var conflict *models.ConflictError
	if errors.As(err, &conflict) {
		return render(c, http.StatusConflict, views.UserFormPage(h.page(c, "User "+f.Username, "users"), f, "Not done: "+conflict.Message+"."))
	}
	if err := formErrors(err, f.Errors); err != nil {
		return err
	}
	return render(c, http.StatusBadRequest, views.UserFormPage(h.page(c, "User "+f.Username, "users"), f, ""))
}

// DeleteUser handles POST /users/{id}/delete.
func (h *Handlers) DeleteUser(c echo.Context) error {
	ctx := c.Request().Context()
	u, err := h.store.GetUser(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	if err := h.store.DeleteUser(ctx, actor(c), u.ID); err != nil {
		return h.userRefused(c, err, views.UserForm{ID: u.ID, Username: u.Username, Role: u.Role, Errors: views.FormErrors{}})
	}
	return h.redirectWithFlash(c, "/users", fmt.Sprintf("User %q deleted.", u.Username))
}

// defaultTokenDays is the validity a new token form suggests.
const defaultTokenDays = 90

func (h *Handlers) accountView(c echo.Context) (views.AccountView, error) {
	u := CurrentUser(c)
	v := views.AccountView{Username: u.Username, Role: u.Role, TokenDays: strconv.Itoa(defaultTokenDays),
		TokenErrors: views.FormErrors{}, PasswordErrs: views.FormErrors{}}
	tokens, _, err := h.store.ListTokens(c.Request().Context(), u.ID, models.Page{Limit: models.MaxPageSize})
	if err != nil {
		return v, err
	}
	for _, t := range tokens {
		v.Tokens = append(v.Tokens, views.TokenRow{ID: t.ID, Name: t.Name, Created: views.FormatTime(&t.CreatedAt),
			Expires: views.FormatTime(&t.ExpiresAt), LastUsed: views.FormatTime(t.LastUsedAt)})
	}
	return v, nil
}

// AccountPage shows GET /account.
func (h *Handlers) AccountPage(c echo.Context) error {
	v, err := h.accountView(c)
	if err != nil {
		return err
	}
	return render(c, http.StatusOK, views.AccountPage(h.page(c, "Your account", ""), v))
}

// CreateOwnToken handles POST /account/tokens. The answer is the page itself
// (not a redirect), because the secret must be shown once and never stored.
func (h *Handlers) CreateOwnToken(c echo.Context) error {
	ctx := c.Request().Context()
	name, daysText := c.FormValue("name"), strings.TrimSpace(c.FormValue("expires_in_days"))
	errs := views.FormErrors{}
	days, err := strconv.Atoi(daysText)
	if err != nil {
		errs["expires_in_days"] = "must be a whole number of days from 1 to 365"
	}
	var secret string
	var tok *models.APIToken
	if len(errs) == 0 {
		tok, secret, err = h.store.CreateToken(ctx, actor(c), CurrentUser(c), name, time.Duration(days)*24*time.Hour)
		if err := formErrors(err, errs); err != nil {
			return err
		}
	}
	v, err := h.accountView(c)
	if err != nil {
		return err
	}
	if len(errs) > 0 {
		v.TokenName, v.TokenDays, v.TokenErrors = name, daysText, errs
		return render(c, http.StatusBadRequest, views.AccountPage(h.page(c, "Your account", ""), v))
	}
	v.NewToken, v.NewTokenName = secret, tok.Name
	c.Response().Header().Set("Cache-Control", "no-store")
	return render(c, http.StatusCreated, views.AccountPage(h.page(c, "Your account", ""), v))
}

// DeleteOwnToken handles POST /account/tokens/{id}/delete; another user's
// token is not found.
func (h *Handlers) DeleteOwnToken(c echo.Context) error {
	if err := h.store.DeleteToken(c.Request().Context(), actor(c), CurrentUser(c).ID, c.Param("id")); err != nil {
		return err
	}
	return h.redirectWithFlash(c, "/account", "Token revoked.")
}

// ChangeOwnPassword handles POST /account/password. Every session of the
// user ends with it, this one too, so the user logs in again.
func (h *Handlers) ChangeOwnPassword(c echo.Context) error {
	u := CurrentUser(c)
	err := h.store.ChangeOwnPassword(c.Request().Context(), actor(c), u.ID, c.FormValue("current_password"), c.FormValue("new_password"))
	if err == nil {
		h.clearSessionCookie(c)
		return h.redirectWithFlash(c, "/login", "Password changed. Log in again with the new password.")
	}
	v, verr := h.accountView(c)
	if verr != nil {
		return verr
	}
	if err := formErrors(err, v.PasswordErrs); err != nil {
		return err
	}
	return render(c, http.StatusBadRequest, views.AccountPage(h.page(c, "Your account", ""), v))
}
