package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// decodeStrict decodes data into v (a pointer to a struct) and refuses
// anything a typo could hide: unknown fields, wrong JSON types, trailing
// data. Errors name the field by its path from root, like
// "inbounds[0].settings.clients[2].idd: unknown field".
func decodeStrict(data []byte, v any, root string) error {
	var tree any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&tree); err != nil {
		return jsonSyntaxError(data, err, root)
	}
	if dec.More() {
		return fmt.Errorf("%s: unexpected data after the JSON value", orRoot(root))
	}
	if err := checkTree(tree, reflect.TypeOf(v).Elem(), root); err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		// checkTree catches what a user can get wrong; this is a backstop.
		return fmt.Errorf("%s: %v", orRoot(root), err)
	}
	return nil
}

func orRoot(path string) string {
	if path == "" {
		return "config"
	}
	return path
}

func jsonSyntaxError(data []byte, err error, root string) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line, col := lineCol(data, se.Offset)
		return fmt.Errorf("%s: invalid JSON at line %d, column %d: %v", orRoot(root), line, col, se)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("%s: invalid JSON: unexpected end of input", orRoot(root))
	}
	return fmt.Errorf("%s: invalid JSON: %v", orRoot(root), err)
}

func lineCol(data []byte, off int64) (line, col int) {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	line = 1 + bytes.Count(data[:off], []byte("\n"))
	// Offset counts the offending byte itself; columns start at 1.
	col = int(off) - 1 - bytes.LastIndexByte(data[:off], '\n')
	return line, col
}

var (
	rawMessageType  = reflect.TypeFor[json.RawMessage]()
	unmarshalerType = reflect.TypeFor[json.Unmarshaler]()
)

// checkTree walks a decoded JSON value beside the Go type it is meant for.
func checkTree(v any, t reflect.Type, path string) error {
	if v == nil {
		return nil // null leaves the zero value, as encoding/json does
	}
	if t == rawMessageType {
		return nil // decoded later, against its own type and path
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		raw, _ := json.Marshal(v)
		if err := reflect.New(t).Interface().(json.Unmarshaler).UnmarshalJSON(raw); err != nil {
			return fmt.Errorf("%s: %v", orRoot(path), err)
		}
		return nil
	}
	switch t.Kind() {
	case reflect.Pointer:
		return checkTree(v, t.Elem(), path)
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			return typeErr(path, "an object", v)
		}
		fields := jsonFields(t)
		for _, key := range sortedKeys(obj) {
			f, ok := fields[key]
			if !ok {
				return fmt.Errorf("%s: unknown field%s", join(path, key), suggest(key, fields))
			}
			if err := checkTree(obj[key], f.Type, join(path, key)); err != nil {
				return err
			}
		}
	case reflect.Slice:
		arr, ok := v.([]any)
		if !ok {
			return typeErr(path, "a list", v)
		}
		for i, e := range arr {
			if err := checkTree(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case reflect.Map:
		obj, ok := v.(map[string]any)
		if !ok {
			return typeErr(path, "an object", v)
		}
		for _, k := range sortedKeys(obj) {
			if err := checkTree(obj[k], t.Elem(), join(path, k)); err != nil {
				return err
			}
		}
	case reflect.String:
		if _, ok := v.(string); !ok {
			return typeErr(path, "a string", v)
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			return typeErr(path, "true or false", v)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := v.(json.Number)
		if !ok {
			return typeErr(path, "a number", v)
		}
		i, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil || reflect.Zero(t).OverflowInt(i) {
			return fmt.Errorf("%s: %s is not a whole number in range", orRoot(path), n)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := v.(json.Number)
		if !ok {
			return typeErr(path, "a number", v)
		}
		u, err := strconv.ParseUint(string(n), 10, 64)
		if err != nil || reflect.Zero(t).OverflowUint(u) {
			return fmt.Errorf("%s: %s is not a whole number from 0 to %d", orRoot(path), n, maxUint(t))
		}
	case reflect.Float32, reflect.Float64:
		if _, ok := v.(json.Number); !ok {
			return typeErr(path, "a number", v)
		}
	case reflect.Interface:
		return nil
	}
	return nil
}

func maxUint(t reflect.Type) uint64 {
	return uint64(1)<<(t.Bits()) - 1
}

func typeErr(path, want string, got any) error {
	return fmt.Errorf("%s: want %s, got %s", orRoot(path), want, jsonKind(got))
}

func jsonKind(v any) string {
	switch v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "a list"
	case string:
		return "a string"
	case bool:
		return "true/false"
	case json.Number:
		return "a number"
	}
	return "null"
}

func join(path, key string) string {
	if !printableKey(key) {
		key = strconv.Quote(key) // a key with a line break must not break the one-line error
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func sortedKeys(m map[string]any) []string {
	// Report the first problem in a stable order.
	return slices.Sorted(maps.Keys(m))
}

// jsonFields maps the JSON names of t's fields (as encoding/json names them,
// matched exactly: a config with "Listen" for "listen" is a typo to report).
func jsonFields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" && f.Anonymous && f.Type.Kind() == reflect.Struct {
			for k, inner := range jsonFields(f.Type) { // promoted, as encoding/json does
				if _, ok := out[k]; !ok {
					out[k] = inner
				}
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f
	}
	return out
}

// suggest names a known field that differs from key only by case, or a
// close spelling, to make the common typo a one-glance fix.
func suggest(key string, fields map[string]reflect.StructField) string {
	best, bestDist := "", 3
	for name := range fields {
		if strings.EqualFold(name, key) {
			return fmt.Sprintf(" (did you mean %q?)", name)
		}
		if d := editDistance(strings.ToLower(name), strings.ToLower(key)); d < bestDist || (d == bestDist && name < best) {
			best, bestDist = name, d
		}
	}
	if best != "" && bestDist <= 2 {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return ""
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// printableKey reports whether key can stand in a field path as it is.
func printableKey(key string) bool {
	for _, r := range key {
		if !unicode.IsPrint(r) || r == '"' {
			return false
		}
	}
	return key != ""
}
