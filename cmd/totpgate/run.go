package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"

	"github.com/totpgate/totpgate/config"
)

// errUsage marks a mistake in the command line; the usage has been printed.
var errUsage = errors.New("usage error")

const usage = `totpgate adds TOTP two-factor login in front of an existing web app.

Usage:
  totpgate demo [flags]           a demo app with the sidecar in front of it: open it in a browser
  totpgate demo [flags]           a demo app with the sidecar in front of it, on loopback: open it in a browser
  totpgate serve [flags]          run the sidecar (flags: totpgate serve -h)
  totpgate check-config [flags]   load and validate the configuration, print it (secrets hidden)
  totpgate keys COMMAND [flags]   key status, rotate, rewrap, min-decryption-version (totpgate keys -h)
  totpgate users get|reset|unlock USER [flags]   a user's MFA record over the admin API (totpgate users -h)
  totpgate version                print the version

Configuration comes from defaults, then --config FILE (or TOTPGATE_CONFIG),
then TOTPGATE_* environment variables, then flags.
`

// run is main without the process: tests call it with their own arguments,
// environment and output.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		cfg, err := loadConfig("serve", rest, getenv, stderr)
		if err != nil {
			return err
		}
		log, err := newLogger(stderr, cfg.Log.Level)
		if err != nil {
			return err
		}
		return serve(ctx, cfg, log)
	case "check-config":
		cfg, err := loadConfig("check-config", rest, getenv, stderr)
		if err != nil {
			return err
		}
		fmt.Fprint(stdout, config.Redacted(cfg))
		explainCredentials(stdout, cfg)
		explainStepUp(stdout, cfg)
		fmt.Fprintln(stdout, "# configuration is valid")
		return nil
	case "keys":
		return keysCommand(ctx, rest, getenv, stdout, stderr)
	case "users":
		return usersCommand(ctx, rest, getenv, stdout, stderr)
	case "demo":
		return demoCommand(ctx, rest, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, versionString())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprintf(stderr, "unknown command %q\n\n%s", cmd, usage)
		return errUsage
	}
}

// loadConfig parses flags, loads and validates, reporting every problem at once.
func loadConfig(name string, args []string, getenv func(string) string, stderr io.Writer) (config.Config, error) {
	return loadConfigWith(name, args, getenv, stderr, func(*flag.FlagSet) {})
}

// loadConfigWith is loadConfig for a command with flags of its own,
// registered by extra beside the configuration flags.
func loadConfigWith(name string, args []string, getenv func(string) string, stderr io.Writer, extra func(*flag.FlagSet)) (config.Config, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	loader := config.NewLoader(fs)
	extra(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return config.Config{}, errUsage
		}
		return config.Config{}, fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return config.Config{}, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	cfg, err := loader.Load(getenv)
	if err != nil {
		return config.Config{}, fmt.Errorf("config: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return config.Config{}, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return cfg, nil
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv})), nil
}

func versionString() string {
	v, rev := buildVersion()
	if rev != "" {
		rev = " " + rev
	}
	return "totpgate " + v + rev
}

// buildVersion is the module version and VCS revision the binary was built
// from, as far as the build recorded them.
func buildVersion() (version, revision string) {
	version = "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	return version, revision
}

// explainCredentials says, as YAML comments, what the gate will look for in
// the app's answers.
func explainCredentials(w io.Writer, cfg config.Config) {
	creds, _ := cfg.Session.Parsed() // validated already
	if len(creds) == 0 {
		fmt.Fprintln(w, "# session.credentials: none; only answers on login.paths are judged")
		return
	}
	fmt.Fprintln(w, "# the gate looks in every answer, on any route, for:")
	for _, c := range creds {
		where := "headers of every answer"
		if c.In == "json" || c.In == "pointer" {
			where = "JSON answers on login.paths"
			if len(cfg.Session.BodyRoutes) > 0 {
				where += " and under " + strings.Join(cfg.Session.BodyRoutes, ", ")
			}
		}
		fmt.Fprintf(w, "#   %s (%s)\n", c, where)
	}
	fmt.Fprintf(w, "# and asks %s whose each one is\n", cfg.Identity.IntrospectPath)
}

// explainStepUp says, as YAML comments, which routes need a recent second
// factor.
func explainStepUp(w io.Writer, cfg config.Config) {
	for _, r := range cfg.StepUp.Routes {
		methods := "every method"
		if len(r.Methods) > 0 {
			methods = strings.Join(r.Methods, ", ")
		}
		fmt.Fprintf(w, "# step-up: %s (%s) needs a second factor given within %s by the session making the request\n", r.Path, methods, r.MaxAge)
	}
}
