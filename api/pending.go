package api

import (
	"context"

	"github.com/totpgate/totpgate/gen"
)

// The operations below are in the contract but come with the second-factor,
// Vault and rewrap work; until then they answer 501 not_implemented.

func (a *API) AdminKeyStatus(context.Context, gen.AdminKeyStatusRequestObject) (gen.AdminKeyStatusResponseObject, error) {
	return nil, ErrNotImplemented
}

func (a *API) AdminRotateKey(context.Context, gen.AdminRotateKeyRequestObject) (gen.AdminRotateKeyResponseObject, error) {
	return nil, ErrNotImplemented
}

func (a *API) AdminStartRewrap(context.Context, gen.AdminStartRewrapRequestObject) (gen.AdminStartRewrapResponseObject, error) {
	return nil, ErrNotImplemented
}

func (a *API) AdminGetRewrap(context.Context, gen.AdminGetRewrapRequestObject) (gen.AdminGetRewrapResponseObject, error) {
	return nil, ErrNotImplemented
}

func (a *API) AdminSetMinDecryptionVersion(context.Context, gen.AdminSetMinDecryptionVersionRequestObject) (gen.AdminSetMinDecryptionVersionResponseObject, error) {
	return nil, ErrNotImplemented
}
