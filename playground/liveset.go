package playground

import "math/bits"

// liveSet is a bitmap of entry indexes with a summary level (one bit per non-zero word), so
// next skips a run of k clear bits in about k/4096 word reads.
type liveSet struct {
	words   []uint64
	summary []uint64
}

// fill makes exactly the indexes [0, n) set.
func (l *liveSet) fill(n int) {
	nw := (n + 63) / 64
	l.words = l.words[:0]
	for range nw {
		l.words = append(l.words, ^uint64(0))
	}
	if r := n % 64; r != 0 {
		l.words[nw-1] = 1<<r - 1
	}
	ns := (nw + 63) / 64
	l.summary = l.summary[:0]
	for range ns {
		l.summary = append(l.summary, ^uint64(0))
	}
	if r := nw % 64; r != 0 {
		l.summary[ns-1] = 1<<r - 1
	}
}

func (l *liveSet) set(i int) {
	w := i >> 6
	for len(l.words) <= w {
		l.words = append(l.words, 0)
	}
	for len(l.summary) <= w>>6 {
		l.summary = append(l.summary, 0)
	}
	l.words[w] |= 1 << (i & 63)
	l.summary[w>>6] |= 1 << (w & 63)
}

func (l *liveSet) clear(i int) {
	w := i >> 6
	if w >= len(l.words) {
		return
	}
	l.words[w] &^= 1 << (i & 63)
	if l.words[w] == 0 {
		l.summary[w>>6] &^= 1 << (w & 63)
	}
}

func (l *liveSet) has(i int) bool {
	w := i >> 6
	return w < len(l.words) && l.words[w]&(1<<(i&63)) != 0
}

// next returns the smallest set index >= i, or -1.
func (l *liveSet) next(i int) int {
	w := i >> 6
	if w >= len(l.words) {
		return -1
	}
	if m := l.words[w] & (^uint64(0) << (i & 63)); m != 0 {
		return w<<6 + bits.TrailingZeros64(m)
	}
	w++
	sw := w >> 6
	if sw >= len(l.summary) {
		return -1
	}
	m := l.summary[sw] & (^uint64(0) << (w & 63))
	for m == 0 {
		sw++
		if sw >= len(l.summary) {
			return -1
		}
		m = l.summary[sw]
	}
	w = sw<<6 + bits.TrailingZeros64(m)
	return w<<6 + bits.TrailingZeros64(l.words[w])
}

// insert shifts every index >= i up by one and sets i, following an entry inserted at i. It
// costs O(words above i): fine for the occasional late update, not for the hot path.
func (l *liveSet) insert(i int) {
	w := i >> 6
	for len(l.words) <= w {
		l.words = append(l.words, 0)
	}
	b := uint(i & 63)
	x := l.words[w]
	low := x & (1<<b - 1)
	carry := x >> 63
	l.words[w] = low | (x&^(1<<b-1))<<1 | 1<<b
	for k := w + 1; k < len(l.words); k++ {
		x := l.words[k]
		l.words[k] = x<<1 | carry
		carry = x >> 63
	}
	if carry != 0 {
		l.words = append(l.words, carry)
	}
	for len(l.summary) <= (len(l.words)-1)>>6 {
		l.summary = append(l.summary, 0)
	}
	for k := w; k < len(l.words); k++ {
		if l.words[k] != 0 {
			l.summary[k>>6] |= 1 << (k & 63)
		} else {
			l.summary[k>>6] &^= 1 << (k & 63)
		}
	}
}
