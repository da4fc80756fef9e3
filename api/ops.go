package api

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"

	"github.com/totpgate/totpgate/gen"
)

// readyTimeout bounds one /readyz: a hung dependency must not hang the probe.
const readyTimeout = 2 * time.Second

// GetHealthz answers as long as the process serves HTTP.
func (a *API) GetHealthz(context.Context, gen.GetHealthzRequestObject) (gen.GetHealthzResponseObject, error) {
	return gen.GetHealthz200JSONResponse{Status: gen.HealthStatusOk}, nil
}

// GetReadyz runs every check at once and is ready only when all pass.
func (a *API) GetReadyz(ctx context.Context, _ gen.GetReadyzRequestObject) (gen.GetReadyzResponseObject, error) {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	results := make([]gen.ReadinessCheck, len(a.checks))
	var wg sync.WaitGroup
	for i, c := range a.checks {
		wg.Go(func() {
			results[i] = gen.ReadinessCheck{Name: c.Name, Status: gen.ReadinessCheckStatusOk}
			if err := c.Run(ctx); err != nil {
				msg := err.Error()
				results[i].Status, results[i].Error = gen.ReadinessCheckStatusFailing, &msg
			}
		})
	}
	wg.Wait()
	r := gen.Readiness{Status: gen.ReadinessStatusReady, Checks: results}
	for _, c := range results {
		if c.Status != gen.ReadinessCheckStatusOk {
			r.Status = gen.ReadinessStatusNotReady
			return gen.GetReadyz503JSONResponse(r), nil
		}
	}
	return gen.GetReadyz200JSONResponse(r), nil
}

// GetMetrics renders the injected registry in the Prometheus text format.
func (a *API) GetMetrics(context.Context, gen.GetMetricsRequestObject) (gen.GetMetricsResponseObject, error) {
	families, err := a.gatherer.Gather()
	if err != nil {
		return nil, fmt.Errorf("api: gather metrics: %w", err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range families {
		if err := enc.Encode(mf); err != nil {
			return nil, fmt.Errorf("api: encode metrics: %w", err)
		}
	}
	return gen.GetMetrics200TextResponse(buf.String()), nil
}

// GetOpenAPISpec serves openapi.yaml exactly as the binary was built from it.
func (a *API) GetOpenAPISpec(context.Context, gen.GetOpenAPISpecRequestObject) (gen.GetOpenAPISpecResponseObject, error) {
	return gen.GetOpenAPISpec200ApplicationyamlResponse{Body: bytes.NewReader(a.spec), ContentLength: int64(len(a.spec))}, nil
}
