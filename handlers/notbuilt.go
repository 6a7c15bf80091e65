package handlers

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// notBuilt answers a route whose handler is not written yet, honestly.
func notBuilt(echo.Context) error {
	return &Problem{Status: http.StatusNotImplemented, Code: "not_built", Message: "this page or call is not built yet"}
}
