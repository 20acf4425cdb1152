package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"unicode/utf8"
)

// ErrStrictJSON is wrapped by every error of Unmarshal and UnmarshalAnswer
// that the strict rules (not encoding/json) found.
var ErrStrictJSON = errors.New("api: JSON rejected by strict decoding")

// Unmarshal decodes data into dst (a pointer) under the strict rules of the
// package documentation, unknown fields included. Errors name the offending
// key or position, never a value.
func Unmarshal(data []byte, dst any) error { return unmarshal(data, dst, false) }

// UnmarshalAnswer is Unmarshal but ignores unknown fields: for answers whose
// sender may be newer than the reader (the broker, Lambda's APIs).
func UnmarshalAnswer(data []byte, dst any) error { return unmarshal(data, dst, true) }

func unmarshal(data []byte, dst any, allowUnknown bool) error {
	if !utf8.Valid(data) {
		return fmt.Errorf("%w: invalid UTF-8", ErrStrictJSON)
	}
	var t reflect.Type
	if dst != nil {
		t = reflect.TypeOf(dst)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := checkValue(dec, t, allowUnknown, ""); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: data after the JSON value", ErrStrictJSON)
	}
	strict := json.NewDecoder(bytes.NewReader(data))
	if !allowUnknown {
		strict.DisallowUnknownFields()
	}
	if err := strict.Decode(dst); err != nil {
		return describe(err)
	}
	return nil
}

// describe turns an encoding/json error into one that echoes no value.
func describe(err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return errors.New("empty body")
	case errors.As(err, &se):
		return fmt.Errorf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		if te.Field != "" {
			return fmt.Errorf("field %q must be %s", te.Field, te.Type)
		}
		return fmt.Errorf("the value must be %s", te.Type)
	}
	msg := err.Error() // e.g. json: unknown field "x"; illegal base64 data at input byte N
	if len(msg) > 120 {
		msg = msg[:120]
	}
	return errors.New(msg)
}

// checkValue reads one JSON value from dec and checks it against t (nil:
// anything, checked only for duplicates, NUL and case variants).
func checkValue(dec *json.Decoder, t reflect.Type, allowUnknown bool, path string) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	tok, err := dec.Token()
	if err != nil {
		return describe(err)
	}
	switch v := tok.(type) {
	case string:
		if strings.IndexByte(v, 0) >= 0 {
			return fmt.Errorf("%w: NUL character in %s", ErrStrictJSON, where(path))
		}
		return nil
	case json.Delim:
		switch v {
		case '{':
			return checkObject(dec, t, allowUnknown, path)
		case '[':
			var elem reflect.Type
			if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
				elem = t.Elem()
			}
			for dec.More() {
				if err := checkValue(dec, elem, allowUnknown, path+"[]"); err != nil {
					return err
				}
			}
			_, err := dec.Token() // ]
			return err
		}
	}
	return nil // number, bool, null
}

func checkObject(dec *json.Decoder, t reflect.Type, allowUnknown bool, path string) error {
	var fields map[string]reflect.Type
	var elem reflect.Type
	if t != nil {
		switch t.Kind() {
		case reflect.Struct:
			fields = jsonFields(t)
		case reflect.Map:
			elem = t.Elem()
		}
	}
	seen := map[string]string{} // folded → as sent
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return describe(err)
		}
		key := tok.(string)
		if strings.IndexByte(key, 0) >= 0 {
			return fmt.Errorf("%w: NUL character in a key of %s", ErrStrictJSON, where(path))
		}
		folded := strings.ToLower(key)
		if prev, dup := seen[folded]; dup {
			if prev == key {
				return fmt.Errorf("%w: duplicate key %q in %s", ErrStrictJSON, clip(key), where(path))
			}
			return fmt.Errorf("%w: keys %q and %q differ only in case in %s", ErrStrictJSON, clip(prev), clip(key), where(path))
		}
		seen[folded] = key
		child := elem
		if fields != nil {
			ft, ok := fields[key]
			if !ok {
				for name := range fields {
					if strings.EqualFold(name, key) {
						return fmt.Errorf("%w: key %q must be spelled %q", ErrStrictJSON, clip(key), name)
					}
				}
				if !allowUnknown {
					return fmt.Errorf("%w: unknown field %q in %s", ErrStrictJSON, clip(key), where(path))
				}
			}
			child = ft
		}
		if err := checkValue(dec, child, allowUnknown, join(path, key)); err != nil {
			return err
		}
	}
	_, err := dec.Token() // }
	return err
}

// jsonFields maps the JSON names of t's exported fields to their types
// (embedded structs' fields included, as encoding/json does).
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() && !f.Anonymous {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range jsonFields(ft) {
					if _, ok := out[k]; !ok {
						out[k] = v
					}
				}
				continue
			}
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

func join(path, key string) string {
	if path == "" {
		return clip(key)
	}
	return path + "." + clip(key)
}

func where(path string) string {
	if path == "" {
		return "the top-level value"
	}
	return fmt.Sprintf("%q", path)
}

// clip keeps error text short: keys are caller text.
func clip(s string) string {
	if len(s) > 64 {
		s = s[:64]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
		return s + "…"
	}
	return s
}
