package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/totpgate/totpgate/config"
	"github.com/totpgate/totpgate/mfa"
	"github.com/totpgate/totpgate/totp"
)

// exitRefused: users import refused lines (nothing was written).
const exitRefused = 5

// importCommand brings users who already have TOTP in the app along:
// totpgate users import FILE [--dry-run] [--recovery-codes OUT].
// Every line is checked before anything is written, so a file with a bad
// line imports nothing; a rerun of a good file changes nothing.
func importCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(stderr, usersUsage)
		return &exitError{exitUsage, errUsage}
	}
	file := args[0]
	var dryRun bool
	var codesOut, issuer string
	cfg, err := loadConfigWith("users import", args[1:], getenv, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&dryRun, "dry-run", false, "check every line and report what would be imported; write nothing")
		fs.StringVar(&codesOut, "recovery-codes", "", "also make recovery codes, written once to this new file (mode 0600) for the operator to hand out")
		fs.StringVar(&issuer, "issuer", "", "import only entries of this issuer (default: mfa.issuer; * for every issuer); entries of other services are skipped")
	})
	if err != nil {
		return &exitError{exitUsage, err}
	}
	in, err := os.Open(file)
	if err != nil {
		return &exitError{exitUsage, fmt.Errorf("users import: %w", err)}
	}
	defer in.Close()
	if issuer == "" {
		issuer = cfg.MFA.Issuer
	}
	recs, bad, skipped := totp.ParseImport(in, mfaParams(cfg.MFA), issuer)
	for _, sk := range skipped {
		fmt.Fprintf(stderr, "%s: line %d: skipped %s\n", file, sk.Line, sk.Reason)
	}
	defer func() {
		for _, r := range recs {
			clear(r.Secret)
		}
	}()
	if len(bad) > 0 {
		for _, e := range bad {
			fmt.Fprintf(stderr, "%s: %s\n", file, e.Error())
		}
		return &exitError{exitRefused, fmt.Errorf("users import: %d line(s) refused; nothing imported", len(bad))}
	}
	svc, closeState, err := openMFA(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	defer closeState()
	// First pass: every user is checked against what is stored (a user
	// with a different second factor on refuses the whole import).
	var conflicts []string
	for _, r := range recs {
		if _, _, err := svc.Import(ctx, r, false, true); errors.Is(err, mfa.ErrImportConflict) {
			conflicts = append(conflicts, fmt.Sprintf("%s: line %d: user %q already has a different second factor (reset them first)", file, r.Line, r.UserID))
		} else if err != nil {
			return fmt.Errorf("users import: %w", err)
		}
	}
	if len(conflicts) > 0 {
		fmt.Fprintln(stderr, strings.Join(conflicts, "\n"))
		return &exitError{exitRefused, fmt.Errorf("users import: %d user(s) refused; nothing imported", len(conflicts))}
	}
	var codesFile *os.File
	if codesOut != "" && !dryRun {
		// O_EXCL: codes are written once; an existing file is never overwritten.
		if codesFile, err = os.OpenFile(codesOut, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
			return &exitError{exitUsage, fmt.Errorf("users import: --recovery-codes: %w", err)}
		}
		defer codesFile.Close()
	}
	counts := map[mfa.ImportOutcome]int{}
	for _, r := range recs {
		outcome, codes, err := svc.Import(ctx, r, codesFile != nil, dryRun)
		if err != nil {
			return fmt.Errorf("users import: line %d (%s): %w", r.Line, r.UserID, err)
		}
		counts[outcome]++
		verb := string(outcome)
		if dryRun && outcome == mfa.Imported {
			verb = "would import"
		}
		fmt.Fprintf(stdout, "line %d: %s %s (%s, %d digits, %d s)\n", r.Line, verb, r.UserID, r.Params.Algorithm, r.Params.Digits, r.Params.Period)
		if len(codes) > 0 {
			fmt.Fprintf(codesFile, "%s %s\n", r.UserID, strings.Join(codes, " "))
		}
	}
	what := "imported"
	if dryRun {
		what = "would import"
	}
	fmt.Fprintf(stdout, "%s %d, unchanged %d\n", what, counts[mfa.Imported], counts[mfa.ImportUnchanged])
	return nil
}

// exportCommand writes every active user's secret as an otpauth:// URI to
// a new file, for leaving totpgate (users import reads it back). It prints
// secrets by nature, so it wants an explicit flag and never writes to the
// terminal.
func exportCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var out string
	var confirm bool
	cfg, err := loadConfigWith("users export", args, getenv, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&out, "out", "", "new file (mode 0600) to write the otpauth:// URIs to")
		fs.BoolVar(&confirm, "i-understand-this-writes-secrets", false, "required: the file holds every user's TOTP secret in the clear")
	})
	if err != nil {
		return &exitError{exitUsage, err}
	}
	if out == "" || !confirm {
		fmt.Fprint(stderr, usersUsage)
		return &exitError{exitUsage, errors.New("users export: needs --out FILE and --i-understand-this-writes-secrets")}
	}
	svc, closeState, err := openMFA(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	defer closeState()
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return &exitError{exitUsage, fmt.Errorf("users export: --out: %w", err)}
	}
	n := 0
	err = svc.Export(ctx, func(user string, secret []byte, p totp.Params) error {
		n++
		_, err := fmt.Fprintln(f, totp.URI(cfg.MFA.Issuer, user, secret, p))
		return err
	})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out) // never leave half the secrets behind
		return fmt.Errorf("users export: %w", err)
	}
	fmt.Fprintf(stdout, "exported %d users to %s\n", n, out)
	return nil
}

// openMFA opens the store and keyring of cfg and the second-factor service
// on them, for the one-shot user commands.
func openMFA(ctx context.Context, cfg config.Config, stderr io.Writer) (*mfa.Service, func(), error) {
	_, st, keys, closeState, err := openState(ctx, cfg, stderr)
	if err != nil {
		return nil, nil, err
	}
	svc, err := newMFA(ctx, cfg.MFA, st, keys)
	if err != nil {
		closeState()
		return nil, nil, err
	}
	return svc, closeState, nil
}
