package handlers

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/lifeboat-dr/lifeboat/models"
)

// UserJSON is a user in the API. The password is write-only.
type UserJSON struct {
	ID        string    `json:"id"`
	Username  string    `json:"username"`
	Role      string    `json:"role"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// UserInputJSON is the body of create and update. On update the username
// cannot change and an absent password keeps the current one.
type UserInputJSON struct {
	Username string `json:"username"`
	Password string `json:"password"`
	Role     string `json:"role"`
}

func userJSON(u models.User) UserJSON {
	return UserJSON{ID: u.ID, Username: u.Username, Role: u.Role, CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt}
}

func (in UserInputJSON) toInput() models.UserInput {
	return models.UserInput{Username: in.Username, Password: in.Password, Role: in.Role}
}

// APIListUsers answers GET /api/v1/users.
func (h *Handlers) APIListUsers(c echo.Context) error {
	page, err := pageParams(c)
	if err != nil {
		return err
	}
	items, next, err := h.store.ListUsers(c.Request().Context(), page)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, newList(items, next, userJSON))
}

// APIGetUser answers GET /api/v1/users/{id}.
func (h *Handlers) APIGetUser(c echo.Context) error {
	u, err := h.store.GetUser(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, userJSON(*u))
}

// APICreateUser answers POST /api/v1/users.
func (h *Handlers) APICreateUser(c echo.Context) error {
	var in UserInputJSON
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	u, err := h.store.CreateUser(c.Request().Context(), actor(c), in.toInput())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, userJSON(*u))
}

// APIUpdateUser answers PUT /api/v1/users/{id}; demoting the last Owner is
// refused with 409 last_owner.
func (h *Handlers) APIUpdateUser(c echo.Context) error {
	ctx := c.Request().Context()
	old, err := h.store.GetUser(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	var in UserInputJSON
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	u, err := h.store.UpdateUser(ctx, actor(c), old.ID, in.toInput())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, userJSON(*u))
}

// APIDeleteUser answers DELETE /api/v1/users/{id}; deleting the last Owner
// is refused with 409 last_owner.
func (h *Handlers) APIDeleteUser(c echo.Context) error {
	if err := h.store.DeleteUser(c.Request().Context(), actor(c), c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
