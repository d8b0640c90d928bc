package rng

// Key is a stream key still open to more ids: NewKey(seed, p, a).With(b).
// Stream() is New(seed, p, a, b). A loop over many items keys the common
// part once and adds only each item's own ids, instead of hashing every id
// again for every item.
type Key struct{ k uint64 }

// NewKey keys (seed, purpose, ids...).
func NewKey(seed uint64, purpose Purpose, ids ...uint64) Key {
	k := mix(seed ^ 0x243F6A8885A308D3)
	k = mix(k ^ mix(uint64(purpose)+0x13198A2E03707344))
	key := Key{k}
	for _, id := range ids {
		key = key.With(id)
	}
	return key
}

// With appends one id.
func (k Key) With(id uint64) Key { return Key{mix(k.k ^ mix(id+0xA4093822299F31D0))} }

// Stream is the stream of the ids so far, at its start.
func (k Key) Stream() Stream { return Stream{key: k.k} }
