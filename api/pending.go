package api

import (
	"context"

	"github.com/totpgate/totpgate/gen"
)

// The operations below are in the contract but come with the second-factor,
// Vault and rewrap work; until then they answer 501 not_implemented.

func (a *API) GetStatus(context.Context, gen.GetStatusRequestObject) (gen.GetStatusResponseObject, error) {
	return nil, ErrNotImplemented
}

func (a *API) StartEnrollment(context.Context, gen.StartEnrollmentRequestObject) (gen.StartEnrollmentResponseObject, error) {
	return nil, ErrNotImplemented
}

func (a *API) ConfirmEnrollment(context.Context, gen.ConfirmEnrollmentRequestObject) (gen.ConfirmEnrollmentResponseObject, error) {
	return nil, ErrNotImplemented
}

func (a *API) DisableMfa(context.Context, gen.DisableMfaRequestObject) (gen.DisableMfaResponseObject, error) {
	return nil, ErrNotImplemented
}

func (a *API) RegenerateRecoveryCodes(context.Context, gen.RegenerateRecoveryCodesRequestObject) (gen.RegenerateRecoveryCodesResponseObject, error) {
	return nil, ErrNotImplemented
}

func (a *API) CompleteChallenge(context.Context, gen.CompleteChallengeRequestObject) (gen.CompleteChallengeResponseObject, error) {
	return nil, ErrNotImplemented
}

func (a *API) StartChallengeEnrollment(context.Context, gen.StartChallengeEnrollmentRequestObject) (gen.StartChallengeEnrollmentResponseObject, error) {
	return nil, ErrNotImplemented
}

func (a *API) ConfirmChallengeEnrollment(context.Context, gen.ConfirmChallengeEnrollmentRequestObject) (gen.ConfirmChallengeEnrollmentResponseObject, error) {
	return nil, ErrNotImplemented
}

func (a *API) AdminGetUser(context.Context, gen.AdminGetUserRequestObject) (gen.AdminGetUserResponseObject, error) {
	return nil, ErrNotImplemented
}

func (a *API) AdminResetUser(context.Context, gen.AdminResetUserRequestObject) (gen.AdminResetUserResponseObject, error) {
	return nil, ErrNotImplemented
}

func (a *API) AdminUnlockUser(context.Context, gen.AdminUnlockUserRequestObject) (gen.AdminUnlockUserResponseObject, error) {
	return nil, ErrNotImplemented
}

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
