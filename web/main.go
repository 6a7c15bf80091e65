// Command lifeboat-vault is the Lifeboat vault: the portal, the JSON API and
// (later) the agent endpoint, on one HTTPS listener.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "lifeboat-vault:", err)
		os.Exit(1)
	}
}

// run is the whole program: main only adds the process around it, so tests
// run the real thing.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "registration-key":
			return registrationKeyCommand(ctx, args[1:], getenv, stdout, stderr)
		case "backup":
			return backupCommand(ctx, args[1:], getenv, stdout, stderr)
		case "restore":
			return restoreCommand(args[1:], stdout, stderr)
		case "rebuild":
			return rebuildCommand(ctx, args[1:], getenv, stdout, stderr)
		}
	}
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	v, err := openVault(ctx, cfg, stdout, stderr)
	if err != nil {
		return err
	}
	defer v.Close()
	return v.Serve(ctx)
}
