package main

import "strings"

// nearest returns the candidate closest to word, for a "did you mean"
// hint: the one whose spelling, once case, a MESHREG_ prefix and "_" for
// "-" are set aside (data_dir, DATA-DIR and MESHREG_DATA_DIR all mean
// data-dir), is word's; otherwise the one at the smallest edit distance,
// if that is at most a third of word's length (at least 1, at most 3);
// otherwise the longest one that word starts with (listen-addr: listen),
// or that starts with word, of 4 letters or more. A hint is never a wild
// guess.
func nearest(word string, candidates []string) (string, bool) {
	norm := func(s string) string {
		s = strings.ToLower(strings.TrimSpace(s))
		s = strings.TrimPrefix(s, "meshreg_")
		return strings.NewReplacer("_", "-", ".", "-", " ", "-").Replace(s)
	}
	w := norm(word)
	best, bestDist := "", -1
	for _, c := range candidates {
		if norm(c) == w {
			return c, true
		}
		if d := editDistance(w, norm(c)); bestDist < 0 || d < bestDist {
			best, bestDist = c, d
		}
	}
	if limit := min(max(len(w)/3, 1), 3); bestDist >= 0 && bestDist <= limit {
		return best, true
	}
	best = ""
	for _, c := range candidates {
		n := norm(c)
		if len(n) >= 4 && len(w) >= 4 && (strings.HasPrefix(w, n) || strings.HasPrefix(n, w)) && len(c) > len(best) {
			best = c
		}
	}
	return best, best != ""
}

// editDistance is the Levenshtein distance between a and b (bytes).
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
