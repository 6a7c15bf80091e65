// Package static holds the portal's CSS, JavaScript and images, embedded in
// the vault binary.
package static

import "embed"

// Files are served under /static/.
//
//go:embed css js img
var Files embed.FS
