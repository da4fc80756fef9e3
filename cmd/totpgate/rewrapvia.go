package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/totpgate/totpgate/config"
	"github.com/totpgate/totpgate/gen"
	"github.com/totpgate/totpgate/rotation"
)

// rewrapPoll is how often `keys rewrap --via` asks the sidecar how its job
// goes.
const rewrapPoll = 500 * time.Millisecond

// rewrapVia hands the rewrap to the running sidecar whose admin listener is
// at via (POST /admin/keys/rewrap) and follows the job until it ends. On
// SQLite the sidecar is the one writer of the store: a job in its own
// process would contend with the sidecar's logins for the database's single
// write lock (busy-timeout polling across processes), where in the sidecar
// both go through its one writer connection.
func rewrapVia(ctx context.Context, via string, admin config.Admin, opts rotation.Options, raise bool, stdout, stderr io.Writer) error {
	token, err := adminTokenOf(admin)
	if err != nil {
		return err
	}
	if token == "" {
		return errors.New("--via needs the admin token: admin.token_file (--admin.token-file) or TOTPGATE_ADMIN_TOKEN")
	}
	c, err := gen.NewClientWithResponses(strings.TrimSuffix(via, "/"), gen.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
		r.Header.Set("Authorization", "Bearer "+token)
		return nil
	}))
	if err != nil {
		return fmt.Errorf("rewrap via %s: %w", via, err)
	}
	started, err := c.AdminStartRewrapWithResponse(ctx, gen.RewrapRequest{BatchSize: &opts.BatchSize, RatePerSecond: &opts.Rate, InFlight: &opts.InFlight})
	if err != nil {
		return fmt.Errorf("rewrap via %s: %w", via, err)
	}
	if started.JSON202 == nil {
		return fmt.Errorf("rewrap via %s: %w", via, refusedBy(started.HTTPResponse, started.Body))
	}
	job, err := followRewrap(ctx, c, via, *started.JSON202, newProgress(stderr))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "rewrap %s %s: %d of %d secrets moved to v%d, %d failed\n", job.Id, job.State, job.Done, job.Total, job.TargetVersion, job.Failed)
	if job.State != gen.RewrapJobStateSucceeded {
		why := string(job.State)
		if job.Error != nil {
			why = *job.Error
		}
		return fmt.Errorf("rewrap %s: %s", job.Id, why)
	}
	if !raise {
		return nil
	}
	raised, err := c.AdminSetMinDecryptionVersionWithResponse(ctx, gen.MinDecryptionVersionRequest{Version: job.TargetVersion})
	if err != nil {
		return fmt.Errorf("raise the minimum decryption version via %s: %w", via, err)
	}
	if raised.JSON200 == nil {
		return fmt.Errorf("raise the minimum decryption version via %s: %w", via, refusedBy(raised.HTTPResponse, raised.Body))
	}
	fmt.Fprintf(stdout, "minimum decryption version raised to %d\n", raised.JSON200.MinDecryptionVersion)
	return nil
}

// followRewrap polls the sidecar about job until it ends, showing its
// progress on bar, and answers the job as it ended.
func followRewrap(ctx context.Context, c *gen.ClientWithResponses, via string, job gen.RewrapJob, bar *progress) (gen.RewrapJob, error) {
	defer bar.finish()
	for job.State == gen.RewrapJobStateRunning {
		bar.update(jobOf(job))
		select {
		case <-ctx.Done():
			return job, fmt.Errorf("rewrap %s: stopped following it (it goes on in the sidecar; `GET /admin/keys/rewrap` shows it): %w", job.Id, ctx.Err())
		case <-time.After(rewrapPoll):
		}
		res, err := c.AdminGetRewrapWithResponse(ctx)
		switch {
		case err != nil:
			return job, fmt.Errorf("rewrap %s via %s: %w", job.Id, via, err)
		case res.JSON200 == nil:
			return job, fmt.Errorf("rewrap %s via %s: %w", job.Id, via, refusedBy(res.HTTPResponse, res.Body))
		case res.JSON200.Id != job.Id:
			return job, fmt.Errorf("rewrap %s via %s: the sidecar now reports job %s", job.Id, via, res.JSON200.Id)
		}
		job = *res.JSON200
	}
	bar.update(jobOf(job))
	return job, nil
}

// jobOf is what the progress bar shows of an answered job.
func jobOf(j gen.RewrapJob) rotation.Job {
	return rotation.Job{ID: j.Id, State: string(j.State), Total: j.Total, Done: j.Done, Failed: j.Failed}
}

// adminTokenOf is the admin API's bearer token as configured (admin.token,
// or the file admin.token_file, read now); "" when none is.
func adminTokenOf(a config.Admin) (string, error) {
	if a.TokenFile == "" {
		return a.Token, nil
	}
	b, err := os.ReadFile(a.TokenFile)
	if err != nil {
		return "", fmt.Errorf("admin.token_file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// refusedBy says why the sidecar refused: its status and the problem's
// detail (never anything secret: the admin API answers none in a problem).
func refusedBy(res *http.Response, body []byte) error {
	var p gen.Problem
	if json.Unmarshal(body, &p) == nil && p.Detail != nil {
		return fmt.Errorf("%s: %s", res.Status, *p.Detail)
	}
	return errors.New(res.Status)
}
