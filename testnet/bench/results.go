package main

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

type results struct {
	servers []*server
	samples map[string]map[*server][]float64
	notes   map[string][]string
}

func newResults(servers []*server) *results {
	return &results{servers: servers, samples: map[string]map[*server][]float64{}, notes: map[string][]string{}}
}

func (r *results) add(metric string, s *server, v float64, note string) {
	if r.samples[metric] == nil {
		r.samples[metric] = map[*server][]float64{}
	}
	r.samples[metric][s] = append(r.samples[metric][s], v)
	if note != "" {
		r.notes[metric] = append(r.notes[metric], s.name+": "+note)
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// percentile is the p-th percentile (0 < p <= 100) of v by the
// nearest-rank method: the smallest sample with at least p% of the samples
// at or below it. It is 0 for no samples.
func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}

// commandLine names the command that produced a table.
func commandLine() string {
	return fmt.Sprintf("Command: `go run ./testnet/bench %s` (or `make bench`).\n", strings.Join(os.Args[1:], " "))
}

// table renders the medians as Markdown, with the meshreg/Distribution
// ratio and the command that produced it.
func (r *results) table(c config, mesh, dist *server) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| metric (median of %d) | meshreg | %s | meshreg / Distribution |\n", c.runs, dist.name)
	b.WriteString("| --- | ---: | ---: | ---: |\n")
	rows := []struct {
		key, label string
		format     string
	}{
		{"blob push", fmt.Sprintf("push one %s blob, MB/s (higher is better)", c.blobSize), "%.0f"},
		{"blob pull", fmt.Sprintf("pull one %s blob, MB/s (higher is better)", c.blobSize), "%.0f"},
		{"image push", fmt.Sprintf("push a %d × %s image, s (lower is better)", c.layers, c.layerSize), "%.2f"},
		{"image pull", fmt.Sprintf("pull a %d × %s image, s (lower is better)", c.layers, c.layerSize), "%.2f"},
		{"manifest GET by tag", fmt.Sprintf("manifest GET by tag, %d conns, req/s (higher is better)", c.conns), "%.0f"},
		{"blob HEAD", fmt.Sprintf("blob HEAD, %d conns, req/s (higher is better)", c.conns), "%.0f"},
		{"peak RSS", "peak RSS (VmHWM), MiB (lower is better)", "%.0f"},
	}
	for _, row := range rows {
		m, d := median(r.samples[row.key][mesh]), median(r.samples[row.key][dist])
		ratio := "–"
		if d != 0 {
			ratio = fmt.Sprintf("%.2f×", m/d)
		}
		fmt.Fprintf(&b, "| %s | "+row.format+" | "+row.format+" | %s |\n", row.label, m, d, ratio)
	}
	fmt.Fprintf(&b, "\n%s; %d CPUs; %s; loopback; both servers running, alternating; meshreg %s.\n",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), runtime.Version(), mesh.version)
	b.WriteString(commandLine())
	var keys []string
	for _, row := range rows {
		keys = append(keys, row.key)
	}
	r.writeNotes(&b, keys...)
	return b.String()
}

// writeNotes lists the notes of the metrics named, if any, under the
// table in b.
func (r *results) writeNotes(b *strings.Builder, metrics ...string) {
	var notes []string
	for _, m := range metrics {
		for _, n := range r.notes[m] {
			notes = append(notes, m+": "+n)
		}
	}
	if len(notes) > 0 {
		b.WriteString("\nNotes:\n")
		for _, n := range notes {
			fmt.Fprintf(b, "- %s\n", n)
		}
	}
}
