package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/totpgate/totpgate/audit"
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
	svc, rec, closeState, err := openMFA(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	defer closeState()
	var codesFile *os.File
	if codesOut != "" && !dryRun {
		// O_EXCL: codes are written once; an existing file is never overwritten.
		if codesFile, err = os.OpenFile(codesOut, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
			return &exitError{exitUsage, fmt.Errorf("users import: --recovery-codes: %w", err)}
		}
		defer codesFile.Close()
	}
	counts := map[mfa.ImportOutcome]int{}
	err = svc.ImportAll(ctx, recs, codesFile != nil, dryRun, func(r mfa.ImportResult) error {
		counts[r.Outcome]++
		verb := string(r.Outcome)
		if dryRun && r.Outcome == mfa.Imported {
			verb = "would import"
		}
		fmt.Fprintf(stdout, "line %d: %s %s (%s, %d digits, %d s)\n", r.Line, verb, r.UserID, r.Params.Algorithm, r.Params.Digits, r.Params.Period)
		if r.Outcome == mfa.Imported && !dryRun {
			rec.Record(ctx, audit.Event{Name: audit.AdminImport, UserID: r.UserID, Route: "users import", Outcome: "ok"})
		}
		if len(r.RecoveryCodes) > 0 {
			_, err := fmt.Fprintf(codesFile, "%s %s\n", r.UserID, strings.Join(r.RecoveryCodes, " "))
			return err
		}
		return nil
	})
	var refused *mfa.ImportRefusedError
	if errors.As(err, &refused) {
		for _, e := range refused.Lines {
			fmt.Fprintf(stderr, "%s: %s\n", file, e.Error())
		}
	}
	if refused != nil && len(counts) == 0 {
		if codesFile != nil {
			os.Remove(codesOut) // ours (O_EXCL), and empty: a corrected rerun may use the name
		}
		rec.Record(ctx, audit.Event{Name: audit.AdminImport, Route: "users import", Outcome: "refused"})
		return &exitError{exitRefused, fmt.Errorf("users import: %d user(s) refused; nothing imported", len(refused.Lines))}
	}
	if err != nil {
		return fmt.Errorf("users import: %w", err)
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
	svc, rec, closeState, err := openMFA(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	defer closeState()
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return &exitError{exitUsage, fmt.Errorf("users export: --out: %w", err)}
	}
	n, err := svc.ExportLines(ctx, totp.ExportOTPAuth, func(line string) error {
		_, err := fmt.Fprintln(f, line)
		return err
	})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out) // never leave half the secrets behind
		return fmt.Errorf("users export: %w", err)
	}
	rec.Record(ctx, audit.Event{Name: audit.AdminExport, Route: "users export", Outcome: fmt.Sprintf("%s %d", totp.ExportOTPAuth, n)})
	fmt.Fprintf(stdout, "exported %d users to %s\n", n, out)
	return nil
}

// openMFA opens the store and keyring of cfg and the second-factor service
// on them, for the one-shot user commands, with an audit log on their
// logger.
func openMFA(ctx context.Context, cfg config.Config, stderr io.Writer) (*mfa.Service, audit.Recorder, func(), error) {
	log, st, keys, closeState, err := openState(ctx, cfg, stderr)
	if err != nil {
		return nil, nil, nil, err
	}
	svc, err := newMFA(ctx, cfg.MFA, st, keys, nil, time.Now)
	if err != nil {
		closeState()
		return nil, nil, nil, err
	}
	return svc, audit.NewLog(log), closeState, nil
}
