package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// EnvPrefix starts every environment variable the loader reads.
const EnvPrefix = "TOTPGATE_"

// Field is one leaf setting, reachable under three names.
type Field struct {
	Path   string // YAML path, dotted: upstream.url
	Env    string // TOTPGATE_UPSTREAM_URL
	Flag   string // upstream.url
	Doc    string
	Secret bool // never printed
	value  reflect.Value
}

// Fields lists the leaves of c in declaration order; their values point into c.
func Fields(c *Config) []Field {
	var out []Field
	walk(reflect.ValueOf(c).Elem(), nil, &out)
	return out
}

func walk(v reflect.Value, path []string, out *[]Field) {
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		p := append(append([]string(nil), path...), name)
		fv := v.Field(i)
		if fv.Kind() == reflect.Struct && fv.Type() != reflect.TypeFor[time.Duration]() {
			walk(fv, p, out)
			continue
		}
		*out = append(*out, Field{
			Path:   strings.Join(p, "."),
			Env:    EnvPrefix + strings.ToUpper(strings.Join(p, "_")),
			Flag:   strings.ReplaceAll(strings.Join(p, "."), "_", "-"),
			Doc:    sf.Tag.Get("doc"),
			Secret: sf.Tag.Get("secret") == "true",
			value:  fv,
		})
	}
}

// String renders the field's current value the way it is written in env and flags.
func (f Field) String() string {
	switch x := f.value.Interface().(type) {
	case []string:
		return strings.Join(x, ",")
	case []int:
		parts := make([]string, len(x))
		for i, n := range x {
			parts[i] = strconv.Itoa(n)
		}
		return strings.Join(parts, ",")
	case time.Duration:
		return x.String()
	case StepUpRoutes:
		return x.String()
	default:
		return fmt.Sprint(x)
	}
}

// Set parses s into the field.
func (f Field) Set(s string) error {
	switch f.value.Interface().(type) {
	case string:
		f.value.SetString(s)
	case bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("want true or false, got %q", s)
		}
		f.value.SetBool(b)
	case float64:
		x, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("want a number, got %q", s)
		}
		f.value.SetFloat(x)
	case int, int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("want an integer, got %q", s)
		}
		f.value.SetInt(n)
	case time.Duration:
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("want a duration such as 5s or 2m, got %q", s)
		}
		f.value.SetInt(int64(d))
	case []string:
		var parts []string
		for p := range strings.SplitSeq(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		f.value.Set(reflect.ValueOf(parts))
	case []int:
		var ns []int
		for p := range strings.SplitSeq(s, ",") {
			if p = strings.TrimSpace(p); p == "" {
				continue
			}
			n, err := strconv.Atoi(p)
			if err != nil {
				return fmt.Errorf("want comma-separated integers, got %q", s)
			}
			ns = append(ns, n)
		}
		f.value.Set(reflect.ValueOf(ns))
	case StepUpRoutes:
		rs, err := ParseStepUpRoutes(s)
		if err != nil {
			return err
		}
		f.value.Set(reflect.ValueOf(rs))
	default:
		return fmt.Errorf("unsupported type %s", f.value.Type())
	}
	return nil
}

// IsBoolFlag lets `--upstream.preserve-host` stand for `=true`.
func (f Field) IsBoolFlag() bool { return f.value.Kind() == reflect.Bool }

// Loader builds a Config from defaults, a YAML file, the environment and
// flags, in that order of increasing precedence.
type Loader struct {
	cfg     Config
	file    string
	flagSet map[string]string // flag name -> raw value, applied last
}

// NewLoader registers --config, one flag per setting and a few short aliases
// on fs. Call fs.Parse, then Load.
func NewLoader(fs *flag.FlagSet) *Loader {
	l := &Loader{cfg: Default(), flagSet: map[string]string{}}
	fs.StringVar(&l.file, "config", "", "YAML config file (env: TOTPGATE_CONFIG)")
	for _, f := range Fields(&Config{}) {
		fs.Var(&deferredFlag{l: l, name: f.Flag, bool: f.IsBoolFlag()}, f.Flag, f.Doc+" (env: "+f.Env+")")
	}
	// Short spellings for what is typed most often.
	for alias, target := range map[string]string{"upstream": "upstream.url"} {
		fs.Var(&deferredFlag{l: l, name: target}, alias, "shorthand for --"+target)
	}
	return l
}

// Load applies the file, environment and flags over the defaults. It does not
// validate; call Config.Validate.
func (l *Loader) Load(getenv func(string) string) (Config, error) {
	cfg := l.cfg
	file := l.file
	if file == "" {
		file = getenv(EnvPrefix + "CONFIG")
	}
	if file != "" {
		if err := decodeFile(file, &cfg); err != nil {
			return Config{}, err
		}
	}
	var errs []error
	fields := Fields(&cfg)
	for _, f := range fields {
		if s, ok := lookupEnv(getenv, f.Env); ok {
			if err := f.Set(s); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", f.Env, err))
			}
		}
	}
	for _, f := range fields {
		if s, ok := l.flagSet[f.Flag]; ok {
			if err := f.Set(s); err != nil {
				errs = append(errs, fmt.Errorf("--%s: %w", f.Flag, err))
			}
		}
	}
	cfg.Keyring.Vault.applyVaultEnv(getenv)
	return cfg, errors.Join(errs...)
}

// lookupEnv treats an empty variable as unset, as getenv cannot tell them apart.
func lookupEnv(getenv func(string) string, name string) (string, bool) {
	s := getenv(name)
	return s, s != ""
}

func decodeFile(path string, cfg *Config) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true) // a misspelt key is an error, not a silent default
	// io.EOF: an empty file means "no settings", not an error.
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config: %s: %w", path, err)
	}
	return nil
}

// deferredFlag records a flag's raw value so flags apply after the file and
// environment, whatever order they were parsed in.
type deferredFlag struct {
	l    *Loader
	name string
	bool bool
}

func (d *deferredFlag) String() string   { return "" }
func (d *deferredFlag) IsBoolFlag() bool { return d.bool }
func (d *deferredFlag) Set(s string) error {
	d.l.flagSet[d.name] = s
	return nil
}
