package config

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
)

// FieldDigests digests every field of c on its own: the dotted path of
// each leaf of its canonical encoding (e.g. "seed", "train.lr") to a short
// hash of its value. Two processes exchange these instead of whole
// configs to say which fields differ when their Hash values do.
func (c *Config) FieldDigests() map[string]string {
	b, err := json.Marshal(c)
	if err != nil {
		panic("config: marshal for digests: " + err.Error()) // plain data: cannot fail
	}
	var tree any
	if err := json.Unmarshal(b, &tree); err != nil {
		panic("config: decode own encoding: " + err.Error())
	}
	out := map[string]string{}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		if m, ok := v.(map[string]any); ok && len(m) > 0 {
			for k, sub := range m {
				p := k
				if path != "" {
					p = path + "." + k
				}
				walk(p, sub)
			}
			return
		}
		leaf, _ := json.Marshal(v)
		sum := sha256.Sum256(leaf)
		out[path] = hex.EncodeToString(sum[:6])
	}
	walk("", tree)
	return out
}

// DiffFields lists, sorted, the fields whose digests differ between a and
// b, including fields only one of them has.
func DiffFields(a, b map[string]string) []string {
	var out []string
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			out = append(out, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}
