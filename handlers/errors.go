package handlers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/lifeboat-dr/lifeboat/models"
	"github.com/lifeboat-dr/lifeboat/views"
)

// Problem is an error a user sees: an HTTP status, a stable code, a message
// that says what happened and what to do, and optional details.
type Problem struct {
	Status  int
	Code    string
	Message string
	Details map[string]any
}

func (p *Problem) Error() string { return fmt.Sprintf("%d %s: %s", p.Status, p.Code, p.Message) }

func apiError(status int, code, message string) *Problem {
	return &Problem{Status: status, Code: code, Message: message}
}

// ErrorBody is the JSON shape of every API error (DESIGN.md §7).
type ErrorBody struct {
	Error ErrorObject `json:"error"`
}

// ErrorObject is the error inside ErrorBody.
type ErrorObject struct {
	Code    string         `json:"code"`
	Message string         `json:"message"`
	Details map[string]any `json:"details,omitempty"`
}

// toProblem maps any error to what the user sees. This is the one place
// where domain errors become HTTP statuses.
func toProblem(err error) (*Problem, bool) {
	var p *Problem
	var v *models.ValidationError
	var conflict *models.ConflictError
	var he *echo.HTTPError
	switch {
	case errors.As(err, &p):
		return p, true
	case errors.As(err, &v):
		details := map[string]any{"fields": v.Fields}
		msg := "the request has invalid fields: " + v.Error()
		return &Problem{Status: http.StatusBadRequest, Code: "validation_failed", Message: msg, Details: details}, true
	case errors.Is(err, models.ErrNotFound):
		return &Problem{Status: http.StatusNotFound, Code: "not_found", Message: "no such object; it may have been deleted"}, true
	case errors.As(err, &conflict):
		return &Problem{Status: http.StatusConflict, Code: conflict.Code, Message: conflict.Message}, true
	case errors.Is(err, middleware.ErrCSRFInvalid):
		return csrfProblem(), true
	case errors.Is(err, context.DeadlineExceeded):
		return &Problem{Status: http.StatusServiceUnavailable, Code: "timeout", Message: "the vault took too long to answer; try again"}, true
	case errors.As(err, &he):
		return httpErrorProblem(he), he.Code < 500
	}
	return &Problem{Status: http.StatusInternalServerError, Code: "internal_error",
		Message: "the vault failed to handle this request; the error is in the vault's log under the request id"}, false
}

func csrfProblem() *Problem {
	return &Problem{Status: http.StatusForbidden, Code: "csrf_invalid",
		Message: "the form's security token is missing or stale; reload the page and submit it again"}
}

func httpErrorProblem(he *echo.HTTPError) *Problem {
	switch he.Code {
	case http.StatusNotFound:
		return &Problem{Status: he.Code, Code: "route_not_found", Message: "there is no page or API call at this address"}
	case http.StatusMethodNotAllowed:
		return &Problem{Status: he.Code, Code: "method_not_allowed", Message: "this address does not accept this HTTP method"}
	case http.StatusRequestEntityTooLarge:
		return &Problem{Status: he.Code, Code: "body_too_large", Message: "the request body is larger than the vault accepts (1 MiB)"}
	case http.StatusUnsupportedMediaType:
		return &Problem{Status: he.Code, Code: "unsupported_media_type", Message: "send the body as application/json"}
	case http.StatusBadRequest:
		if he.Message != nil && fmt.Sprint(he.Message) != "" && isCSRFMessage(fmt.Sprint(he.Message)) {
			return csrfProblem()
		}
		return &Problem{Status: he.Code, Code: "bad_request", Message: "the request could not be read"}
	case http.StatusForbidden:
		return csrfProblem() // the only 403 echo raises itself is the CSRF check
	case http.StatusUnauthorized:
		return &Problem{Status: he.Code, Code: "unauthenticated", Message: "log in first"}
	case http.StatusServiceUnavailable:
		return &Problem{Status: he.Code, Code: "unavailable", Message: "the vault is busy; try again"}
	}
	if he.Code >= 500 {
		return &Problem{Status: he.Code, Code: "internal_error", Message: "the vault failed to handle this request; the error is in the vault's log under the request id"}
	}
	return &Problem{Status: he.Code, Code: "http_" + fmt.Sprint(he.Code), Message: http.StatusText(he.Code)}
}

func isCSRFMessage(m string) bool {
	return m == "missing csrf token in the form parameter" || m == "missing csrf token in request header"
}

// ErrorHandler answers every error: JSON under /api, a page elsewhere. It
// logs server errors in full and never shows their text (SQL, stack) to the
// client.
func (h *Handlers) ErrorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	p, expected := toProblem(err)
	reqID := c.Response().Header().Get(echo.HeaderXRequestID)
	if !expected || p.Status >= 500 {
		h.log.ErrorContext(c.Request().Context(), "request failed",
			"request_id", reqID, "method", c.Request().Method, "path", c.Request().URL.Path, slog.Any("error", err))
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(p.Status)
		return
	}
	if IsAPI(c) || IsAgent(c) {
		_ = c.JSON(p.Status, ErrorBody{Error: ErrorObject{Code: p.Code, Message: p.Message, Details: p.Details}})
		return
	}
	// The request's context may already be cancelled (the timeout middleware
	// has returned by now); the error page must still render.
	c.SetRequest(c.Request().WithContext(context.WithoutCancel(c.Request().Context())))
	page := h.page(c, "Error", "")
	if err := render(c, p.Status, views.ErrorPage(page, views.ErrorView{Status: p.Status, Code: p.Code, Message: p.Message, RequestID: reqID})); err != nil {
		h.log.ErrorContext(c.Request().Context(), "render error page", "request_id", reqID, slog.Any("error", err))
		_ = c.String(p.Status, p.Message)
	}
}
