package source

import "github.com/keysetsync/keysetsync/avro"

// User exposes the decoding of record i to the tests, whichever path parsed the page.
func (p *RawPage) User(page, i int) (avro.User, error) { return p.user(page, i) }

// WalkerHeld is how many records w holds exactly (at its position and in its window).
func WalkerHeld(w *Walker) int { return len(w.seen) + len(w.window) }
