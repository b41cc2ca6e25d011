package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// benchMarkdown renders the results as a Markdown section: the machine, the
// command, the table and the chart.
func benchMarkdown(reports []*benchReport, chart string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Machine: %s. Run %s.\n\n", machine(), time.Now().UTC().Format("2006-01-02"))
	args := append([]string{"warm"}, os.Args[1:]...)
	fmt.Fprintf(&b, "Command: `%s`\n\n", strings.Join(args, " "))
	cols := append([]string{"file", "bytes", "tensors", "stored/logical", "warm (fill L2)"}, benchModes...)
	tableHead(&b, append(cols, "load_cold / cold_raw", "load_source / cold_raw"))
	for _, r := range reports {
		src := ""
		if r.SourceRate > 0 {
			src = fmt.Sprintf(" (source throttled to %d MB/s)", r.SourceRate/1_000_000)
		}
		fmt.Fprintf(&b, "| %s%s | %d | %d | %.3f | %.2f |", filepath.Base(r.File), src, r.Bytes, r.Tensors, r.StoredRatio, r.WarmGBps)
		for _, m := range benchModes {
			fmt.Fprintf(&b, " %.2f |", r.rate(m))
		}
		fmt.Fprintf(&b, " %.2f× | %.2f× |\n", r.LoadColdGBps/r.ColdRawGBps, r.LoadSource/r.ColdRawGBps)
	}
	b.WriteString("\nRates in GB/s of logical tensor bytes, median of the runs. Per-tensor latency of the tensor-by-tensor modes, p50 / p99 in µs:\n\n")
	tableHead(&b, append(append([]string{"file"}, perTensorModes...), "page cache left after eviction"))
	for _, r := range reports {
		fmt.Fprintf(&b, "| %s |", filepath.Base(r.File))
		for _, m := range perTensorModes {
			fmt.Fprintf(&b, " %.0f / %.0f |", r.Latency[m].P50, r.Latency[m].P99)
		}
		fmt.Fprintf(&b, " %.1f%% |\n", r.ColdResidency*100)
	}
	if chart != "" {
		fmt.Fprintf(&b, "\n![throughput per mode](%s)\n", filepath.Base(chart))
	}
	return b.String()
}

// tableHead writes a Markdown table's header row and rule.
func tableHead(b *strings.Builder, cols []string) {
	b.WriteString("| " + strings.Join(cols, " | ") + " |\n|")
	for range cols {
		b.WriteString("---|")
	}
	b.WriteString("\n")
}

// spliceMarkdown replaces the text between the markers of the named section
// in file with section, appending the markers if the file has none.
func spliceMarkdown(file, name, section string) error {
	mdStart := "<!-- warm-bench:" + name + ":start -->"
	mdEnd := "<!-- warm-bench:" + name + ":end -->"
	old, err := os.ReadFile(file)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	text := string(old)
	block := mdStart + "\n" + section + mdEnd
	i, j := strings.Index(text, mdStart), strings.Index(text, mdEnd)
	if i >= 0 && j > i {
		text = text[:i] + block + text[j+len(mdEnd):]
	} else {
		text = strings.TrimRight(text, "\n") + "\n\n" + block + "\n"
	}
	return os.WriteFile(file, []byte(text), 0o644)
}

// benchChart draws the rates as grouped bars, one group per file and run,
// on a log scale (L1 is orders of magnitude above the rest).
func benchChart(reports []*benchReport) string {
	const (
		width, height       = 900, 420
		left, right, top    = 70, 170, 30
		bottom              = 90
		minRate, maxDecades = 0.01, 6.0
	)
	colors := []string{"#9e9e9e", "#616161", "#bdbdbd", "#e0e0e0", "#1e88e5", "#0d47a1", "#43a047",
		"#fb8c00", "#8e24aa", "#4a148c", "#1b5e20"}
	plotW, plotH := float64(width-left-right), float64(height-top-bottom)
	y := func(gbps float64) float64 {
		d := math.Log10(max(gbps, minRate)/minRate) / maxDecades
		return float64(top) + plotH*(1-min(d, 1))
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="18" font-size="14">modelcache: read throughput per mode (GB/s, log scale)</text>`+"\n", left)
	for d := 0.0; d <= maxDecades; d++ {
		v := minRate * math.Pow(10, d)
		yy := y(v)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e0e0e0"/>`+"\n", left, yy, float64(left)+plotW, yy)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%g</text>`+"\n", left-6, yy+4, v)
	}
	group := plotW / float64(max(len(reports), 1))
	bar := group * 0.8 / float64(len(benchModes))
	for i, r := range reports {
		gx := float64(left) + group*float64(i) + group*0.1
		for k, m := range benchModes {
			v := r.rate(m)
			x, yy := gx+bar*float64(k), y(v)
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %.2f GB/s</title></rect>`+"\n",
				x, yy, bar*0.9, float64(top)+plotH-yy, colors[k], filepath.Base(r.File), m, v)
		}
		label := filepath.Base(r.File)
		if r.SourceRate > 0 {
			label += fmt.Sprintf(" @%dMB/s", r.SourceRate/1_000_000)
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", gx+group*0.4, height-bottom+18, label)
	}
	for k, m := range benchModes {
		yy := top + 10 + 20*k
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
			width-right+20, yy, colors[k], width-right+38, yy+10, m)
	}
	b.WriteString("</svg>\n")
	return b.String()
}
