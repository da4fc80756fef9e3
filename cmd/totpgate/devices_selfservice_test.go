package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/totpgate/totpgate/gen"
	"github.com/totpgate/totpgate/internal/gatecookie"
)

// trustHere is POST /mfa/devices for user with code, from a browser named
// ua that holds the device token device ("" none).
func (e *loginEnv) trustHere(t *testing.T, user, code, ua, device string) *gen.TrustThisDeviceResponse {
	t.Helper()
	res, err := e.c.TrustThisDeviceWithResponse(context.Background(), gen.CodeRequest{Code: code}, session(user),
		func(_ context.Context, r *http.Request) error {
			r.Header.Set("User-Agent", ua)
			if device != "" {
				r.AddCookie(&http.Cookie{Name: gatecookie.Device, Value: device})
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// deviceLogin logs user in with no code, presenting the device token.
func (e *loginEnv) deviceLogin(t *testing.T, user, device string) (*http.Response, string) {
	t.Helper()
	return e.login(t, "/login", `{"user":"`+user+`","password":"pw"}`, http.Header{"Cookie": {gatecookie.Device + "=" + device}})
}

// A logged-in user trusts the browser they are on through the user API
// (the self-service page's "Trust this browser"): after a valid code only,
// counted like every code; the device then passes a login without a code;
// trusting again from the same browser replaces its device; refusals are
// the declared answers (the contract checker sees every one).
func TestTrustedDeviceFromTheUserAPI(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, "TOTPGATE_MFA_TRUSTED_DEVICE_TTL=48h")
	code, recovery := e.enroll(t, "alice")
	ctx := context.Background()

	if res := e.trustHere(t, "alice", "000000", "browser A", ""); res.StatusCode() != http.StatusForbidden || res.HTTPResponse.Header.Get("Set-Cookie") != "" {
		t.Fatalf("a wrong code: %d %q %s, want 403 and no cookie", res.StatusCode(), res.HTTPResponse.Header.Get("Set-Cookie"), res.Body)
	}
	now := code(0)
	res := e.trustHere(t, "alice", now, "browser A/1.0", "")
	if res.JSON201 == nil {
		t.Fatalf("trust with a code: %d %s", res.StatusCode(), res.Body)
	}
	d := res.JSON201
	if !d.Current || d.Label != "browser A/1.0" || d.ExpiresAt.Sub(d.CreatedAt) != 48*time.Hour || res.HTTPResponse.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("trusted device %+v, Cache-Control %q: want current, labelled from the User-Agent, 48h, no-store", d, res.HTTPResponse.Header.Get("Cache-Control"))
	}
	token := deviceCookie(t, "user API", cookieNamed(res.HTTPResponse, gatecookie.Device))
	if c := cookieNamed(res.HTTPResponse, gatecookie.Device); c.MaxAge < 48*3600-5 || c.MaxAge > 48*3600 {
		t.Errorf("Max-Age %d, want the device's life (48h)", c.MaxAge)
	}
	if again := e.trustHere(t, "alice", now, "browser B", ""); again.StatusCode() != http.StatusForbidden {
		t.Errorf("the same code again (a replay): %d %s, want 403", again.StatusCode(), again.Body)
	}

	// The device passes a login without a code, and its token rotates.
	login, body := e.deviceLogin(t, "alice", token)
	if login.StatusCode != http.StatusOK || !granted(login, body) {
		t.Fatalf("login on the device trusted through the API: %d %s", login.StatusCode, body)
	}
	rotated := deviceCookie(t, "login", cookieNamed(login, gatecookie.Device))
	if rotated == token {
		t.Fatal("the device token did not rotate")
	}

	// Trusting again from that browser (with a recovery code) replaces its
	// device: one browser, one device; the old token gives nothing.
	res = e.trustHere(t, "alice", recovery[0], "browser A/2.0", rotated)
	if res.JSON201 == nil {
		t.Fatalf("trust again with a recovery code: %d %s", res.StatusCode(), res.Body)
	}
	replaced := deviceCookie(t, "user API", cookieNamed(res.HTTPResponse, gatecookie.Device))
	list, err := e.c.ListTrustedDevicesWithResponse(ctx, session("alice"), func(_ context.Context, r *http.Request) error {
		r.AddCookie(&http.Cookie{Name: gatecookie.Device, Value: replaced})
		return nil
	})
	if err != nil || list.JSON200 == nil || len(list.JSON200.Devices) != 1 || !list.JSON200.Devices[0].Current ||
		list.JSON200.Devices[0].Id != res.JSON201.Id || list.JSON200.Devices[0].Label != "browser A/2.0" {
		t.Fatalf("devices after trusting the same browser again: %v %s, want the new one only, current", err, list.Body)
	}
	if login, body := e.deviceLogin(t, "alice", rotated); login.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "mfa_required") {
		t.Errorf("login with the replaced device's token: %d %s, want 401 mfa_required", login.StatusCode, body)
	}
	if login, body := e.deviceLogin(t, "alice", replaced); login.StatusCode != http.StatusOK || !granted(login, body) {
		t.Errorf("login on the new device: %d %s", login.StatusCode, body)
	}

	st, err := e.c.GetStatusWithResponse(ctx, session("alice"))
	if err != nil || st.JSON200 == nil || !st.JSON200.TrustedDevicesEnabled || st.JSON200.TrustedDeviceTtlSeconds == nil || *st.JSON200.TrustedDeviceTtlSeconds != 48*3600 {
		t.Errorf("status: %v %s, want trusted devices on for 172800 s", err, st.Body)
	}

	// A user without MFA has nothing to trust a device with; nobody logged
	// in is asked to log in; a cross-site page cannot trust one.
	if res := e.trustHere(t, "nomfa", "123456", "x", ""); res.StatusCode() != http.StatusConflict || !strings.Contains(string(res.Body), "not_enrolled") {
		t.Errorf("a user without MFA: %d %s, want 409 not_enrolled", res.StatusCode(), res.Body)
	}
	if res, err := e.c.TrustThisDeviceWithResponse(ctx, gen.CodeRequest{Code: "123456"}); err != nil || res.StatusCode() != http.StatusUnauthorized {
		t.Errorf("no session: %v %d, want 401", err, res.StatusCode())
	}
	cross, _ := e.send(t, "POST", "/mfa/devices", `{"code":"123456"}`, http.Header{"Cookie": {"session=alice"}, "Origin": {"https://evil.example"}})
	if cross.StatusCode != http.StatusForbidden || cookieNamed(cross, gatecookie.Device) != nil {
		t.Errorf("cross-site trust: %d, want 403 and no cookie", cross.StatusCode)
	}

	// Wrong codes count toward the lockout: it answers 429 with Retry-After.
	_, _ = e.enroll(t, "carol")
	var locked *gen.TrustThisDeviceResponse
	for i := 0; i < 10 && locked == nil; i++ {
		if r := e.trustHere(t, "carol", "999999", "x", ""); r.StatusCode() == http.StatusTooManyRequests {
			locked = r
		}
	}
	if locked == nil || locked.HTTPResponse.Header.Get("Retry-After") == "" {
		t.Fatalf("wrong codes did not lock carol out (%v)", locked)
	}

	// Audited, counted, and no token in the logs.
	raw, _ := scrape(t, e.s)
	for _, line := range []string{`totpgate_mfa_device_events_total{event="trusted",reason="self_service"} 2`,
		`totpgate_mfa_device_events_total{event="revoked",reason="replaced"} 1`,
		`totpgate_recovery_codes_used_total{flow="api"} 1`} {
		if !strings.Contains(raw, line) {
			t.Errorf("/metrics lacks %s:\n%s", line, grepLines(raw, "device_events"))
		}
	}
	logs := e.s.logs.String()
	for _, want := range []string{`"event":"device_trusted","user_id":"alice","client_ip":"127.0.0.1","route":"TrustThisDevice","outcome":"self_service"`,
		`"event":"device_trusted","user_id":"alice","client_ip":"127.0.0.1","route":"TrustThisDevice","outcome":"invalid_code"`,
		`"event":"device_revoked","user_id":"alice","client_ip":"127.0.0.1","route":"TrustThisDevice","outcome":"replaced"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("no audit line with %s", want)
		}
	}
	for _, secret := range []string{token, rotated, replaced, recovery[0]} {
		if strings.Contains(logs, secret) {
			t.Error("the logs hold a device token or recovery code")
		}
	}
}

// With trusted devices off the operation answers 404 trusted_devices_off
// without checking the code (wrong codes lock nobody out), and the status
// says the feature is off.
func TestTrustedDeviceFromTheUserAPIWhenOff(t *testing.T) {
	t.Parallel()
	e := newLoginEnv(t, "TOTPGATE_MFA_TRUSTED_DEVICE_TTL=0")
	e.enroll(t, "alice")
	for range 8 {
		res := e.trustHere(t, "alice", "000000", "x", "")
		if res.StatusCode() != http.StatusNotFound || !strings.Contains(string(res.Body), "trusted_devices_off") || res.HTTPResponse.Header.Get("Set-Cookie") != "" {
			t.Fatalf("trusted devices off: %d %s, want 404 trusted_devices_off and no cookie", res.StatusCode(), res.Body)
		}
	}
	st, err := e.c.GetStatusWithResponse(context.Background(), session("alice"))
	if err != nil || st.JSON200 == nil || st.JSON200.TrustedDevicesEnabled || st.JSON200.TrustedDeviceTtlSeconds != nil || st.JSON200.LockedUntil != nil {
		t.Fatalf("status with the feature off: %v %s, want off, no TTL, not locked", err, st.Body)
	}
}
