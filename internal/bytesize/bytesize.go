// Package bytesize reads and prints byte counts ("256MiB", "1.5GiB",
// "37.5 MiB") the same way everywhere: flags, config and policy files,
// logs, progress lines and the status page.
package bytesize

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// units are the suffixes Parse takes, longest first so that "MiB" is not
// read as "B".
var units = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40},
	{"B", 1},
}

// max is the largest count Parse returns: far above any disk, far below
// overflow when callers add a few counts.
const max = 1 << 62

// Parse reads a byte count: a number, fractions allowed ("1.5GiB"), with
// an optional unit: B; KiB, MiB, GiB, TiB or K, M, G, T (powers of 1024);
// kB or KB, MB, GB, TB (powers of 1000). Negative counts are refused. The
// error says what is wrong, not which setting: callers name that.
func Parse(s string) (int64, error) {
	num := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range units {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	switch {
	case err != nil || num == "" || strings.ContainsAny(num, "eEnN_xXpP+"):
		return 0, errors.New("not a size: want a number of bytes or one with a unit, such as 256MiB or 1.5GiB")
	case v < 0:
		return 0, errors.New("a size cannot be negative")
	case v*float64(mult) > max:
		return 0, errors.New("too large")
	}
	return int64(v * float64(mult)), nil
}

// Format prints n so that Parse reads it back exactly: in the largest
// binary unit that divides it ("256MiB"), else in bytes ("1000").
func Format(n int64) string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// Human prints n for people: to one decimal in the largest binary unit
// below it ("37.5 MiB"), or in bytes below 1 KiB ("512 B").
func Human(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	sign := ""
	if n < 0 {
		sign, n = "-", -n
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%s%.1f %ciB", sign, float64(n)/float64(div), "KMGTPE"[exp])
}
