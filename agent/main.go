// Command lifeboat-agent runs on each hypervisor host: it registers with
// the vault once, then polls it over mutual TLS for work, runs the work, and
// reports progress and results. It opens every connection itself; the
// vault never calls the host.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/lifeboat-dr/lifeboat/agent/runner"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "lifeboat-agent:", err)
		}
		os.Exit(1)
	}
}

const usage = `usage:
  lifeboat-agent register --key-file KEY.json --state-dir DIR [--name NAME]
  lifeboat-agent run --state-dir DIR [--driver filedisk --vm-root DIR] [--config FILE] [--max-tasks N]
                     [--freeze-command CMD --thaw-command CMD] [--start-command CMD] [--stop-command CMD]
  lifeboat-agent verify --target-dir DIR --vm VM-ID [--point ID]
  lifeboat-agent verify --container-url URL --vm VM-ID [--point ID]   (SAS in LIFEBOAT_AZURE_SAS)
  lifeboat-agent export --target-dir DIR --vm VM-ID [--disk ID] --out FILE [--point ID|latest] [--format raw|vhd|qcow2]
  lifeboat-agent export --container-url URL --vm VM-ID ...   (SAS in LIFEBOAT_AZURE_SAS)
  lifeboat-agent version`

// run is the whole program; main only adds the process around it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return errors.New("a command is required")
	}
	switch args[0] {
	case "register":
		return registerCommand(ctx, args[1:], getenv, stdout, stderr)
	case "run":
		return runCommand(ctx, args[1:], getenv, stdout, stderr)
	case "verify":
		return verifyCommand(ctx, args[1:], getenv, stdout, stderr)
	case "export":
		return exportCommand(ctx, args[1:], getenv, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "lifeboat-agent", runner.Version)
		return nil
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	fmt.Fprintln(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q is not debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q is not text or json", format)
}

func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}
