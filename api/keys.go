package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/totpgate/totpgate/audit"
	"github.com/totpgate/totpgate/gen"
	"github.com/totpgate/totpgate/keyring"
	"github.com/totpgate/totpgate/rotation"
)

// Keys is what the admin API needs for key rotation.
type Keys interface {
	Status(ctx context.Context) (rotation.Status, error)
	Rotate(ctx context.Context) (rotation.Status, error)
	RaiseMinDecryptionVersion(ctx context.Context, v int) (rotation.Status, error)
	Start(ctx context.Context, opts rotation.Options) (rotation.Job, error)
	LatestJob(ctx context.Context) (rotation.Job, error)
}

const rewrapPath = "/admin/keys/rewrap"

// keysUnavailable is the 503 of every key operation.
func (a *API) keysUnavailable(ctx context.Context, err error) gen.UnavailableApplicationProblemPlusJSONResponse {
	return unavailableResponse(a.unavailable(ctx, err, "The key backend or the store is not answering. Nothing was changed; try again shortly."))
}

func (a *API) AdminKeyStatus(ctx context.Context, _ gen.AdminKeyStatusRequestObject) (gen.AdminKeyStatusResponseObject, error) {
	st, err := a.keys.Status(ctx)
	if err != nil {
		return gen.AdminKeyStatus503ApplicationProblemPlusJSONResponse{UnavailableApplicationProblemPlusJSONResponse: a.keysUnavailable(ctx, err)}, nil
	}
	return gen.AdminKeyStatus200JSONResponse{KeyStatusJSONResponse: gen.KeyStatusJSONResponse(keyStatus(st))}, nil
}

func (a *API) AdminRotateKey(ctx context.Context, _ gen.AdminRotateKeyRequestObject) (gen.AdminRotateKeyResponseObject, error) {
	st, err := a.keys.Rotate(ctx)
	if err != nil {
		return gen.AdminRotateKey503ApplicationProblemPlusJSONResponse{UnavailableApplicationProblemPlusJSONResponse: a.keysUnavailable(ctx, err)}, nil
	}
	a.record(ctx, audit.KeyRotated, "", fmt.Sprintf("%s v%d", st.Keys.Backend, st.Keys.LatestVersion))
	return gen.AdminRotateKey200JSONResponse{KeyStatusJSONResponse: gen.KeyStatusJSONResponse(keyStatus(st))}, nil
}

func (a *API) AdminSetMinDecryptionVersion(ctx context.Context, req gen.AdminSetMinDecryptionVersionRequestObject) (gen.AdminSetMinDecryptionVersionResponseObject, error) {
	st, err := a.keys.RaiseMinDecryptionVersion(ctx, req.Body.Version)
	var old *rotation.OldVersionsError
	switch {
	case errors.As(err, &old):
		return gen.AdminSetMinDecryptionVersion409ApplicationProblemPlusJSONResponse(problemAt(ctx, http.StatusConflict, gen.ProblemCodeOldVersionsRemain,
			fmt.Sprintf("%d stored secrets use key versions below %d; run a rewrap first.", old.Remaining, old.Version))), nil
	case errors.Is(err, keyring.ErrInvalidMinVersion):
		return gen.AdminSetMinDecryptionVersion400ApplicationProblemPlusJSONResponse{BadRequestApplicationProblemPlusJSONResponse: gen.BadRequestApplicationProblemPlusJSONResponse(
			problemAt(ctx, http.StatusBadRequest, gen.ProblemCodeValidationFailed,
				fmt.Sprintf("version %d must be between the current minimum and the latest version.", req.Body.Version)))}, nil
	case err != nil:
		return gen.AdminSetMinDecryptionVersion503ApplicationProblemPlusJSONResponse{UnavailableApplicationProblemPlusJSONResponse: a.keysUnavailable(ctx, err)}, nil
	}
	a.record(ctx, audit.KeyMinVersionRaised, "", fmt.Sprint(st.Keys.MinDecryptionVersion))
	return gen.AdminSetMinDecryptionVersion200JSONResponse{KeyStatusJSONResponse: gen.KeyStatusJSONResponse(keyStatus(st))}, nil
}

func (a *API) AdminStartRewrap(ctx context.Context, req gen.AdminStartRewrapRequestObject) (gen.AdminStartRewrapResponseObject, error) {
	var opts rotation.Options
	if req.Body != nil {
		if req.Body.BatchSize != nil {
			opts.BatchSize = *req.Body.BatchSize
		}
		if req.Body.RatePerSecond != nil {
			opts.Rate = *req.Body.RatePerSecond
		}
		if req.Body.InFlight != nil {
			opts.InFlight = *req.Body.InFlight
		}
	}
	job, err := a.keys.Start(ctx, opts)
	var running *rotation.RunningError
	switch {
	case errors.As(err, &running):
		return gen.AdminStartRewrap409ApplicationProblemPlusJSONResponse(problemAt(ctx, http.StatusConflict, gen.ProblemCodeRewrapRunning,
			fmt.Sprintf("Rewrap job %s is running; wait for it to finish.", running.Job.ID))), nil
	case errors.Is(err, rotation.ErrInvalidOptions):
		return gen.AdminStartRewrap400ApplicationProblemPlusJSONResponse{BadRequestApplicationProblemPlusJSONResponse: gen.BadRequestApplicationProblemPlusJSONResponse(
			problemAt(ctx, http.StatusBadRequest, gen.ProblemCodeValidationFailed, err.Error()))}, nil
	case err != nil:
		return gen.AdminStartRewrap503ApplicationProblemPlusJSONResponse{UnavailableApplicationProblemPlusJSONResponse: a.keysUnavailable(ctx, err)}, nil
	}
	a.record(ctx, audit.RewrapStarted, "", job.ID)
	return gen.AdminStartRewrap202JSONResponse{Body: rewrapJob(job), Headers: gen.AdminStartRewrap202ResponseHeaders{Location: rewrapPath}}, nil
}

func (a *API) AdminGetRewrap(ctx context.Context, _ gen.AdminGetRewrapRequestObject) (gen.AdminGetRewrapResponseObject, error) {
	job, err := a.keys.LatestJob(ctx)
	switch {
	case errors.Is(err, rotation.ErrNoJob):
		return gen.AdminGetRewrap404ApplicationProblemPlusJSONResponse(problemAt(ctx, http.StatusNotFound, gen.ProblemCodeRewrapNotFound, "No rewrap has been started yet.")), nil
	case err != nil:
		return gen.AdminGetRewrap503ApplicationProblemPlusJSONResponse{UnavailableApplicationProblemPlusJSONResponse: a.keysUnavailable(ctx, err)}, nil
	}
	return gen.AdminGetRewrap200JSONResponse(rewrapJob(job)), nil
}

func keyStatus(st rotation.Status) gen.KeyStatus {
	out := gen.KeyStatus{
		Backend: gen.KeyStatusBackend(st.Keys.Backend), KeyName: st.Keys.KeyName,
		LatestVersion: st.Keys.LatestVersion, MinDecryptionVersion: st.Keys.MinDecryptionVersion,
		MinEncryptionVersion: st.Keys.MinEncryptionVersion, SecretsTotal: st.Total,
		SecretsUnnamespaced: st.BareTotal, SecretsByVersion: []gen.KeyVersionCount{},
	}
	for _, kc := range st.Versions() {
		out.SecretsByVersion = append(out.SecretsByVersion, gen.KeyVersionCount{
			Backend: gen.KeyVersionCountBackend(kc.Backend), Version: kc.Version, Secrets: kc.Secrets,
		})
	}
	return out
}

func rewrapJob(j rotation.Job) gen.RewrapJob {
	out := gen.RewrapJob{
		Id: j.ID, State: gen.RewrapJobState(j.State), TargetVersion: j.Target.Version,
		Total: j.Total, Done: j.Done, Failed: j.Failed, StartedAt: j.StartedAt,
	}
	if !j.FinishedAt.IsZero() && j.State != rotation.StateRunning {
		out.FinishedAt = &j.FinishedAt
	}
	if j.Error != "" {
		out.Error = &j.Error
	}
	return out
}
