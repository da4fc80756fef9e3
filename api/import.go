package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/totpgate/totpgate/audit"
	"github.com/totpgate/totpgate/gen"
	"github.com/totpgate/totpgate/mfa"
	"github.com/totpgate/totpgate/totp"
)

// MaxAdminBodyBytes bounds a request body on the admin listener: an import
// file of about 50 000 CSV lines. Larger bodies are answered 413 before
// any handler reads them; split the file (an import is idempotent). The
// user API keeps its own, smaller bound (api.max_body_bytes).
const MaxAdminBodyBytes = 4 << 20

// importParams are the query parameters of the import; any other is
// refused (importQuery).
var importParams = []string{"dry_run", "issuer", "recovery_codes"}

// importQuery refuses, before the import runs, a query parameter the
// operation does not declare or gives twice (a misspelt dry-run=true must
// not import for real), and any query parameter with a JSON body, which
// carries the options itself (two places for one option is ambiguous).
func (a *API) importQuery(f gen.StrictHandlerFunc, operationID string) gen.StrictHandlerFunc {
	if operationID != "AdminImportUsers" {
		return f
	}
	return func(ctx context.Context, w http.ResponseWriter, r *http.Request, req any) (any, error) {
		body, _ := req.(gen.AdminImportUsersRequestObject)
		var bad []gen.FieldError
		for name, vals := range r.URL.Query() {
			switch {
			case body.JSONBody != nil:
				bad = append(bad, gen.FieldError{Field: "query." + name, Message: "with a JSON body the options go in the body"})
			case !slices.Contains(importParams, name):
				bad = append(bad, gen.FieldError{Field: "query." + name, Message: "not a parameter of this operation (" + strings.Join(importParams, ", ") + ")"})
			case len(vals) > 1:
				bad = append(bad, gen.FieldError{Field: "query." + name, Message: "given more than once"})
			}
		}
		if len(bad) > 0 {
			slices.SortFunc(bad, func(x, y gen.FieldError) int { return strings.Compare(x.Field, y.Field) })
			p := problemAt(ctx, http.StatusBadRequest, gen.ProblemCodeValidationFailed, "The request does not match the API description; nothing was imported.")
			p.Errors = &bad
			return gen.AdminImportUsers400ApplicationProblemPlusJSONResponse{BadRequestApplicationProblemPlusJSONResponse: gen.BadRequestApplicationProblemPlusJSONResponse(p)}, nil
		}
		return f(ctx, w, r, req)
	}
}

// importInput is the file and options of an import, from either body.
type importInput struct {
	data             string
	issuer           string
	recovery, dryRun bool
}

func importRequest(req gen.AdminImportUsersRequestObject) importInput {
	var in importInput
	deref := func(b *bool) bool { return b != nil && *b }
	switch {
	case req.JSONBody != nil:
		in = importInput{data: req.JSONBody.Data, recovery: deref(req.JSONBody.RecoveryCodes), dryRun: deref(req.JSONBody.DryRun)}
		if req.JSONBody.Issuer != nil {
			in.issuer = *req.JSONBody.Issuer
		}
	case req.TextBody != nil:
		in = importInput{data: *req.TextBody, recovery: deref(req.Params.RecoveryCodes), dryRun: deref(req.Params.DryRun)}
		if req.Params.Issuer != nil {
			in.issuer = *req.Params.Issuer
		}
	}
	return in
}

// AdminImportUsers is `totpgate users import` over the admin API: the same
// parser and the same mfa.Service.ImportAll.
func (a *API) AdminImportUsers(ctx context.Context, req gen.AdminImportUsersRequestObject) (gen.AdminImportUsersResponseObject, error) {
	in := importRequest(req)
	recs, refused, skipped := a.mfa.ParseImport(strings.NewReader(in.data), in.issuer)
	defer func() {
		for _, r := range recs {
			clear(r.Secret)
		}
	}()
	if len(refused) > 0 {
		return a.importRefused(ctx, refused, nil), nil
	}
	report := gen.ImportReport{DryRun: in.dryRun, Skipped: len(skipped), Lines: []gen.ImportLine{}}
	for _, sk := range skipped {
		report.Lines = append(report.Lines, refusedLine(sk, gen.ImportLineOutcomeSkipped))
	}
	written := []gen.ImportLine{} // for an answer to a failure midway
	err := a.mfa.ImportAll(ctx, recs, in.recovery, in.dryRun, func(r mfa.ImportResult) error {
		l := importedLine(r, in.dryRun)
		switch l.Outcome {
		case gen.ImportLineOutcomeImported:
			a.record(ctx, audit.AdminImport, r.UserID, "ok")
			written = append(written, l)
			report.Imported++
		case gen.ImportLineOutcomeWouldImport:
			report.Imported++
		default:
			report.Unchanged++
		}
		report.Lines = append(report.Lines, l)
		return nil
	})
	var conflict *mfa.ImportRefusedError
	switch {
	case errors.As(err, &conflict):
		return a.importRefused(ctx, conflict.Lines, written), nil
	case err != nil:
		if rf := a.refuse(ctx, err); rf.kind == refusedUnavailable {
			detail := fmt.Sprintf("%d of %d users imported before the store or the key backend failed; send the same request again (those are then unchanged).", len(written), len(recs))
			rf.problem.Detail = &detail
			return gen.AdminImportUsers503ApplicationProblemPlusJSONResponse{ImportUnavailableApplicationProblemPlusJSONResponse: gen.ImportUnavailableApplicationProblemPlusJSONResponse{
				Body: importProblem(rf.problem, written), Headers: gen.ImportUnavailableResponseHeaders{CacheControl: "no-store", RetryAfter: rf.retryAfter},
			}}, nil
		}
		return nil, err
	}
	// Skipped entries first, then the imported ones: put them in file order.
	slices.SortStableFunc(report.Lines, func(x, y gen.ImportLine) int { return x.Line - y.Line })
	return gen.AdminImportUsers200JSONResponse{Body: report, Headers: gen.AdminImportUsers200ResponseHeaders{CacheControl: "no-store"}}, nil
}

// importRefused answers the refused lines (nothing was written for them)
// and, when a user enrolled while the import ran, the users imported
// before that one, whose recovery codes would otherwise be lost.
func (a *API) importRefused(ctx context.Context, refused []totp.ImportError, written []gen.ImportLine) gen.AdminImportUsers422ApplicationProblemPlusJSONResponse {
	a.record(ctx, audit.AdminImport, "", "refused")
	lines := make([]gen.ImportLine, 0, len(refused)+len(written))
	for _, e := range refused {
		lines = append(lines, refusedLine(e, gen.ImportLineOutcomeRefused))
	}
	detail := fmt.Sprintf("%d line(s) refuse the import; nothing was imported.", len(refused))
	if len(written) > 0 {
		detail = fmt.Sprintf("%d line(s) refuse the import; %d user(s) before them were imported (listed with outcome imported).", len(refused), len(written))
	}
	p := problemAt(ctx, http.StatusUnprocessableEntity, gen.ProblemCodeImportRefused, detail)
	return gen.AdminImportUsers422ApplicationProblemPlusJSONResponse{ImportRefusedApplicationProblemPlusJSONResponse: gen.ImportRefusedApplicationProblemPlusJSONResponse(importProblem(p, append(lines, written...)))}
}

// importProblem is p with the lines it concerns.
func importProblem(p gen.Problem, lines []gen.ImportLine) gen.ImportProblem {
	return gen.ImportProblem{Type: p.Type, Title: p.Title, Status: p.Status, Code: p.Code, Detail: p.Detail, Instance: p.Instance, RequestId: p.RequestId, Lines: &lines}
}

func refusedLine(e totp.ImportError, outcome gen.ImportLineOutcome) gen.ImportLine {
	reason, detail := gen.ImportReason(e.Code), e.Reason
	l := gen.ImportLine{Line: e.Line, Outcome: outcome, Reason: &reason, Detail: &detail}
	if e.UserID != "" {
		l.UserId = &e.UserID
	}
	return l
}

func importedLine(r mfa.ImportResult, dryRun bool) gen.ImportLine {
	user, p := r.UserID, totpParams(r.Params)
	l := gen.ImportLine{Line: r.Line, UserId: &user, Totp: &p, Outcome: gen.ImportLineOutcomeUnchanged}
	if r.Outcome == mfa.Imported {
		l.Outcome = gen.ImportLineOutcomeImported
		if dryRun {
			l.Outcome = gen.ImportLineOutcomeWouldImport
		}
	}
	if len(r.RecoveryCodes) > 0 {
		l.RecoveryCodes = &r.RecoveryCodes
	}
	return l
}

// AdminExportUsers is `totpgate users export` over the admin API. The
// answer is built whole before it is sent: a failure midway answers a
// problem, never half the users.
func (a *API) AdminExportUsers(ctx context.Context, req gen.AdminExportUsersRequestObject) (gen.AdminExportUsersResponseObject, error) {
	// The validator refuses a body without the acknowledgement; this is
	// the handler's own check of it (fail closed if validation is off).
	if req.Body == nil || req.Body.IUnderstandThisReturnsSecrets != gen.ExportRequestIUnderstandThisReturnsSecretsTrue {
		p := problemAt(ctx, http.StatusBadRequest, gen.ProblemCodeValidationFailed, "The answer holds every user's secret: send i_understand_this_returns_secrets: true.")
		p.Errors = &[]gen.FieldError{{Field: "body.i_understand_this_returns_secrets", Message: "must be true"}}
		return gen.AdminExportUsers400ApplicationProblemPlusJSONResponse{BadRequestApplicationProblemPlusJSONResponse: gen.BadRequestApplicationProblemPlusJSONResponse(p)}, nil
	}
	format := totp.ExportOTPAuth
	if req.Body.Format != nil {
		format = totp.ExportFormat(*req.Body.Format)
	}
	var b strings.Builder
	n, err := a.mfa.ExportLines(ctx, format, func(line string) error {
		b.WriteString(line)
		b.WriteByte('\n')
		return nil
	})
	var unfit *totp.NotRepresentableError
	switch {
	case errors.As(err, &unfit):
		detail := fmt.Sprintf("User %q cannot be written as %s so that it imports as the same user; nothing was exported.", unfit.User, unfit.Format)
		if format == totp.ExportOTPAuth {
			detail += " Export as csv."
		}
		return gen.AdminExportUsers422ApplicationProblemPlusJSONResponse(problemAt(ctx, http.StatusUnprocessableEntity, gen.ProblemCodeExportUnrepresentable, detail)), nil
	case err != nil:
		if rf := a.refuse(ctx, err); rf.kind == refusedUnavailable {
			return gen.AdminExportUsers503ApplicationProblemPlusJSONResponse{UnavailableApplicationProblemPlusJSONResponse: unavailableResponse(rf)}, nil
		}
		return nil, err
	}
	a.record(ctx, audit.AdminExport, "", fmt.Sprintf("%s %d", format, n))
	return gen.AdminExportUsers200TextResponse{Body: b.String(), Headers: gen.AdminExportUsers200ResponseHeaders{CacheControl: "no-store"}}, nil
}
