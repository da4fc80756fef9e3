package totp

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"unicode"
)

// Imported is one user's TOTP secret read from an import file. Secret is
// the raw key; callers clear it after use and never print it.
type Imported struct {
	Line   int
	UserID string
	Issuer string // as the entry names it; empty when it names none
	Secret []byte
	Params Params
}

// ImportError is a refused (or skipped) line. Reason is for people and
// never quotes the secret; Code says the same for programs.
type ImportError struct {
	Line   int
	UserID string // when the line names one (not for ImportBadUserID)
	Code   ImportCode
	Reason string
}

// ImportCode classifies a refused or skipped line. The values are part of
// the admin API (openapi.yaml, ImportReason): add, never rename.
type ImportCode string

// Why a line was refused (or, ImportOtherIssuer, skipped).
const (
	ImportMalformed     ImportCode = "malformed" // not a URI, export or CSV line this reads
	ImportNotBase32     ImportCode = "secret_not_base32"
	ImportWeakSecret    ImportCode = "weak_secret" // under 128 bits, or guessable
	ImportSecretTooLong ImportCode = "secret_too_long"
	ImportUnsupported   ImportCode = "unsupported"        // an entry of another kind (HOTP)
	ImportBadParameters ImportCode = "invalid_parameters" // algorithm, digits or period
	ImportBadUserID     ImportCode = "invalid_user_id"    // empty, or with control or format characters
	ImportDuplicateUser ImportCode = "duplicate_user"     // the file names the user twice
	ImportUnreadable    ImportCode = "unreadable"         // a line longer than the bound
	ImportConflict      ImportCode = "conflict"           // the user has a different second factor (decided by mfa)
	ImportOtherIssuer   ImportCode = "other_issuer"       // skipped: another service's entry
)

// importFault is a refusal with its code, from the line parsers.
type importFault struct {
	code ImportCode
	msg  string
}

func (e *importFault) Error() string { return e.msg }

func fault(code ImportCode, format string, args ...any) error {
	return &importFault{code: code, msg: fmt.Sprintf(format, args...)}
}

// codeOf is the code of a parser's error; a plain error is malformed.
func codeOf(err error) ImportCode {
	var f *importFault
	if errors.As(err, &f) {
		return f.code
	}
	return ImportMalformed
}

func (e ImportError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Reason) }

// maxImportLine bounds one line (a migration export of many accounts is
// one long line).
const maxImportLine = 1 << 20

// ParseImport reads secrets an app already has, one entry a line:
//
//	otpauth://totp/Issuer:alice?secret=...&algorithm=SHA256&digits=8&period=60
//	otpauth-migration://offline?data=...        (an authenticator app's export; several accounts)
//	alice,JBSWY3DPEHPK3PXP[,SHA1,6,30]          (CSV: user_id,secret[,algorithm,digits,period])
//
// Blank lines and lines starting with # are skipped. The user id is the
// account part of an otpauth label (after the issuer's colon) or the CSV's
// first column. Per-user algorithm, digits and period are kept; anything
// unspecified takes defaults. A secret shorter than MinSecretSize bytes
// (RFC 4226 asks for at least 128 bits), a malformed line, a HOTP entry
// and a user named twice are refused with their line numbers.
//
// With issuer set, entries that name another issuer (an authenticator
// export holds every account of the phone: GitHub's, the bank's) are
// skipped, and reported in skipped; "*" takes every issuer.
func ParseImport(r io.Reader, defaults Params, issuer string) (out []Imported, errs []ImportError, skipped []ImportError) {
	seen := map[string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxImportLine)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		recs, err := parseLine(text, defaults)
		if err != nil {
			errs = append(errs, ImportError{Line: line, Code: codeOf(err), Reason: err.Error()})
			continue
		}
		for _, rec := range recs {
			rec.Line = line
			if issuer != "" && issuer != "*" && rec.Issuer != "" && !strings.EqualFold(rec.Issuer, issuer) {
				skipped = append(skipped, ImportError{Line: line, UserID: rec.UserID, Code: ImportOtherIssuer, Reason: fmt.Sprintf("%q of issuer %q (not %q)", rec.UserID, rec.Issuer, issuer)})
				continue
			}
			if err := checkImported(rec); err != nil {
				e := ImportError{Line: line, UserID: rec.UserID, Code: codeOf(err), Reason: err.Error()}
				if e.Code == ImportBadUserID {
					e.UserID = ""
				}
				errs = append(errs, e)
				continue
			}
			if first, dup := seen[rec.UserID]; dup {
				errs = append(errs, ImportError{Line: line, UserID: rec.UserID, Code: ImportDuplicateUser, Reason: fmt.Sprintf("user %q is already on line %d", rec.UserID, first)})
				continue
			}
			seen[rec.UserID] = line
			out = append(out, rec)
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, ImportError{Line: line + 1, Code: ImportUnreadable, Reason: "unreadable: " + err.Error()})
	}
	return out, errs, skipped
}

// parseLine reads one line that is neither blank nor a comment.
func parseLine(text string, defaults Params) ([]Imported, error) {
	switch {
	case strings.HasPrefix(text, "otpauth-migration://"):
		return parseMigration(text, defaults)
	case strings.HasPrefix(text, "otpauth://"):
		rec, err := parseURI(text, defaults)
		return []Imported{rec}, err
	default:
		rec, err := parseCSV(text, defaults)
		return []Imported{rec}, err
	}
}

func checkImported(rec Imported) error {
	switch {
	case rec.UserID == "":
		return fault(ImportBadUserID, "no user id")
	case strings.ContainsFunc(rec.UserID, func(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }):
		// C0 and C1 controls, bidi overrides, zero-width characters: ids
		// that print as another user's, or move the operator's cursor.
		return fault(ImportBadUserID, "the user id holds control or format characters")
	case guessable(rec.Secret):
		return fault(ImportWeakSecret, "the secret is not random (repeated bytes, a known test key): have the user enroll again")
	case len(rec.Secret) < MinSecretSize:
		return fault(ImportWeakSecret, "the secret has %d bits; at least %d are required (RFC 4226): have the user enroll again", len(rec.Secret)*8, MinSecretSize*8)
	case len(rec.Secret) > maxSecretSize:
		return fault(ImportSecretTooLong, "the secret is too long")
	}
	if err := rec.Params.Validate(); err != nil {
		return fault(ImportBadParameters, "%s", err.Error())
	}
	return nil
}

// guessable reports a secret anyone could try: few distinct bytes (all
// zeros, all 0xff), or a repetition of a short key (the RFC 4226/6238 test
// seed "1234567890…", a documentation example typed twice).
func guessable(b []byte) bool {
	distinct := map[byte]bool{}
	for _, c := range b {
		distinct[c] = true
	}
	if len(distinct) < 8 {
		return true
	}
	for period := 1; period <= len(b)/2; period++ {
		repeats := true
		for i := period; i < len(b) && repeats; i++ {
			repeats = b[i] == b[i-period]
		}
		if repeats {
			return true
		}
	}
	return string(b) == "12345678901234567890" || strings.HasPrefix(string(b), "1234567890")
}

// ExportFormat is how ExportLine writes a user's secret.
type ExportFormat string

// The export formats; ParseImport reads both.
const (
	ExportOTPAuth ExportFormat = "otpauth" // otpauth://totp/Issuer:user?secret=...&algorithm=...&digits=...&period=...
	ExportCSV     ExportFormat = "csv"     // "user",SECRET,ALGORITHM,DIGITS,PERIOD
)

// ErrNotRepresentable: a user id the export format would change, so that
// the line would import as another user (a colon or a run of spaces in an
// otpauth label, surrounding spaces, control characters). The error is a
// *NotRepresentableError.
var ErrNotRepresentable = errors.New("totp: the user id does not survive the export format")

// NotRepresentableError names the user ExportLine could not write.
type NotRepresentableError struct {
	User   string
	Format ExportFormat
}

func (e *NotRepresentableError) Error() string {
	return fmt.Sprintf("totp: user %q cannot be written as %s so that it imports as the same user", e.User, e.Format)
}

// Is matches ErrNotRepresentable.
func (e *NotRepresentableError) Is(target error) bool { return target == ErrNotRepresentable }

// ExportLine writes one user's secret as one line of an import file. The
// line is read back before it is returned: one that ParseImport would not
// read as the same user, secret and parameters is ErrNotRepresentable
// instead of a different user on the other side.
func ExportLine(format ExportFormat, issuer, user string, secret []byte, p Params) (string, error) {
	var line string
	switch format {
	case ExportOTPAuth:
		line = URI(issuer, user, secret, p)
	case ExportCSV:
		// Always quoted: an id starting with # or otpauth:// is then not
		// read as a comment or a URI.
		line = `"` + strings.ReplaceAll(user, `"`, `""`) + `",` + EncodeSecret(secret) + "," +
			p.Algorithm + "," + strconv.Itoa(p.Digits) + "," + strconv.Itoa(p.Period)
	default:
		return "", fmt.Errorf("totp: unknown export format %q", format)
	}
	back, err := parseLine(line, p)
	same := err == nil && len(back) == 1 && !strings.ContainsAny(line, "\r\n") && checkImported(back[0]) == nil &&
		back[0].UserID == user && bytes.Equal(back[0].Secret, secret) && back[0].Params == p
	for _, b := range back {
		clear(b.Secret)
	}
	if !same {
		return "", &NotRepresentableError{User: user, Format: format}
	}
	return line, nil
}

var errSecretEncoding = fault(ImportNotBase32, "the secret is not base32")

// decodeSecret reads base32 the way authenticator apps accept it: any
// case, spaces and padding ignored.
func decodeSecret(s string) ([]byte, error) {
	s = strings.ToUpper(strings.NewReplacer(" ", "", "-", "", "=", "").Replace(s))
	b, err := b32.DecodeString(s)
	if err != nil || s == "" {
		return nil, errSecretEncoding
	}
	return b, nil
}

func parseURI(text string, defaults Params) (Imported, error) {
	u, err := url.Parse(text)
	if err != nil {
		return Imported{}, errors.New("not a valid otpauth URI")
	}
	if !strings.EqualFold(u.Host, "totp") {
		return Imported{}, fault(ImportUnsupported, "%q entries are not supported (only totp)", u.Host)
	}
	label := strings.TrimPrefix(u.Path, "/")
	account, labelIssuer := label, ""
	if i := strings.LastIndexByte(label, ':'); i >= 0 {
		account, labelIssuer = label[i+1:], strings.TrimSpace(label[:i])
	}
	q := u.Query()
	issuer := q.Get("issuer")
	if issuer == "" {
		issuer = labelIssuer
	}
	secret, err := decodeSecret(q.Get("secret"))
	if err != nil {
		return Imported{}, err
	}
	p := defaults
	if a := q.Get("algorithm"); a != "" {
		p.Algorithm = strings.ToUpper(a)
	}
	for name, dst := range map[string]*int{"digits": &p.Digits, "period": &p.Period} {
		if v := q.Get(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return Imported{}, fmt.Errorf("%s %q is not a number", name, v)
			}
			*dst = n
		}
	}
	return Imported{UserID: strings.TrimSpace(account), Issuer: issuer, Secret: secret, Params: p}, nil
}

func parseCSV(text string, defaults Params) (Imported, error) {
	rec, err := csv.NewReader(strings.NewReader(text)).Read()
	if err != nil || len(rec) < 2 || len(rec) > 5 {
		return Imported{}, errors.New("not user_id,secret[,algorithm,digits,period], an otpauth:// URI or an otpauth-migration:// export")
	}
	secret, err := decodeSecret(rec[1])
	if err != nil {
		return Imported{}, err
	}
	p := defaults
	if len(rec) > 2 && rec[2] != "" {
		p.Algorithm = strings.ToUpper(strings.TrimSpace(rec[2]))
	}
	for i, dst := range []*int{&p.Digits, &p.Period} {
		if len(rec) > 3+i && strings.TrimSpace(rec[3+i]) != "" {
			n, err := strconv.Atoi(strings.TrimSpace(rec[3+i]))
			if err != nil {
				return Imported{}, fmt.Errorf("column %d is not a number", 4+i)
			}
			*dst = n
		}
	}
	return Imported{UserID: strings.TrimSpace(rec[0]), Secret: secret, Params: p}, nil
}

// parseMigration reads an authenticator app's export
// (otpauth-migration://offline?data=<base64 protobuf MigrationPayload>).
// Its entries carry no period: 30 s, as those apps use.
func parseMigration(text string, defaults Params) ([]Imported, error) {
	u, err := url.Parse(text)
	if err != nil {
		return nil, errors.New("not a valid otpauth-migration URI")
	}
	data := u.Query().Get("data")
	raw, err := base64.StdEncoding.DecodeString(data)
	if err != nil {
		if raw, err = base64.RawStdEncoding.DecodeString(data); err != nil {
			return nil, errors.New("the data parameter is not base64")
		}
	}
	var out []Imported
	err = eachField(raw, func(num int, wire int, v uint64, b []byte) error {
		if num != 1 || wire != 2 {
			return nil // version, batch fields
		}
		rec, err := parseOtpParameters(b, defaults)
		if err != nil {
			return err
		}
		out = append(out, rec)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("the export holds no accounts")
	}
	return out, nil
}

func parseOtpParameters(b []byte, defaults Params) (Imported, error) {
	rec := Imported{Params: defaults}
	rec.Params.Period = 30
	var name string
	otpType := uint64(2)
	err := eachField(b, func(num int, wire int, v uint64, val []byte) error {
		switch {
		case num == 1 && wire == 2:
			rec.Secret = append([]byte(nil), val...)
		case num == 2 && wire == 2:
			name = string(val)
		case num == 3 && wire == 2:
			rec.Issuer = string(val)
		case num == 4 && wire == 0:
			algs := map[uint64]string{0: defaults.Algorithm, 1: SHA1, 2: SHA256, 3: SHA512}
			a, ok := algs[v]
			if !ok {
				return fault(ImportBadParameters, "an entry uses an unsupported algorithm (MD5)")
			}
			rec.Params.Algorithm = a
		case num == 5 && wire == 0:
			switch v {
			case 0, 1:
				rec.Params.Digits = 6
			case 2:
				rec.Params.Digits = 8
			default:
				return fault(ImportBadParameters, "an entry has an unsupported digit count")
			}
		case num == 6 && wire == 0:
			otpType = v
		}
		return nil
	})
	if err != nil {
		return Imported{}, err
	}
	if otpType == 1 {
		return Imported{}, fault(ImportUnsupported, "an entry is HOTP; only TOTP is supported")
	}
	if i := strings.LastIndexByte(name, ':'); i >= 0 {
		if rec.Issuer == "" {
			rec.Issuer = strings.TrimSpace(name[:i])
		}
		name = name[i+1:]
	}
	rec.UserID = strings.TrimSpace(name)
	return rec, nil
}

var errProtobuf = errors.New("the export is not a valid migration payload")

// eachField walks a protobuf message: varints (wire 0) and length-delimited
// fields (wire 2) are handed to fn; fixed-size fields are skipped.
func eachField(b []byte, fn func(num, wire int, v uint64, val []byte) error) error {
	for len(b) > 0 {
		tag, n := uvarint(b)
		if n <= 0 {
			return errProtobuf
		}
		b = b[n:]
		num, wire := int(tag>>3), int(tag&7)
		switch wire {
		case 0:
			v, n := uvarint(b)
			if n <= 0 {
				return errProtobuf
			}
			b = b[n:]
			if err := fn(num, wire, v, nil); err != nil {
				return err
			}
		case 2:
			l, n := uvarint(b)
			if n <= 0 || l > uint64(len(b)-n) {
				return errProtobuf
			}
			val := b[n : n+int(l)]
			b = b[n+int(l):]
			if err := fn(num, wire, 0, val); err != nil {
				return err
			}
		case 1:
			if len(b) < 8 {
				return errProtobuf
			}
			b = b[8:]
		case 5:
			if len(b) < 4 {
				return errProtobuf
			}
			b = b[4:]
		default:
			return errProtobuf
		}
	}
	return nil
}

func uvarint(b []byte) (uint64, int) {
	var v uint64
	for i := 0; i < len(b) && i < 10; i++ {
		v |= uint64(b[i]&0x7f) << (7 * i)
		if b[i] < 0x80 {
			return v, i + 1
		}
	}
	return 0, 0
}
