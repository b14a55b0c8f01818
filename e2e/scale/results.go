// Package scale is `make scale`: a real broker and one real member against N-1
// simulated members (scale_test.go, build tags e2e and scale), its figures, table and
// plot.
package scale

import (
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// ProcStat is one process's cost over the measuring window.
type ProcStat struct {
	RSSMiB     float64 `json:"rssMiB"`
	CPUPercent float64 `json:"cpuPercent"` // of one core
}

// Result is what one fleet size measured.
type Result struct {
	N int `json:"n"`
	// Render.
	RenderSeconds float64 `json:"renderSeconds"`
	TreeBytes     int64   `json:"treeBytes"`
	TreeDiskBytes int64   `json:"treeDiskBytes"`
	TreeFiles     int     `json:"treeFiles"`
	// Broker.
	BrokerObjects        int     `json:"brokerObjects"`
	StoreObjects         int64   `json:"storeObjects"`
	EtcdMiB              float64 `json:"etcdMiB"`
	WatchEventsPerSecond float64 `json:"watchEventsPerSecond"`
	// Processes: kube-apiserver, etcd, mcnet-controller, mcnet-gateway, mcnet-route-agent.
	Processes map[string]ProcStat `json:"processes"`
	// Dataplane of the real member.
	WireGuardPeers int `json:"wireGuardPeers"`
	WorkerRoutes   int `json:"workerRoutes"`
	// Times.
	PublishSeconds      float64 `json:"publishSeconds"`
	BulkConvergeSeconds float64 `json:"bulkConvergeSeconds"`
	// JoinSeconds runs from the joining member's last write (its Endpoint is its second
	// of 22) until the kernel has it; JoinWriteSeconds is how long the writes took.
	JoinSeconds      float64 `json:"joinSeconds"`
	JoinWriteSeconds float64 `json:"joinWriteSeconds"`
	ConvergeSamples  int     `json:"convergeSamples"`
	ConvergeFailures int     `json:"convergeFailures"` // not in the kernel within 30 s
	ConvergeP50      float64 `json:"convergeP50Seconds"`
	ConvergeP99      float64 `json:"convergeP99Seconds"`
	DNSP50Ms         float64 `json:"dnsP50Ms"`
	DNSP99Ms         float64 `json:"dnsP99Ms"`
	ImportedSlices   int     `json:"importedSlices"`
	// Churn during the measurements.
	ChurnUpdates  int64 `json:"churnUpdates"`
	ChurnFailures int64 `json:"churnFailures"`
}

func (r Result) proc(name string) ProcStat { return r.Processes[name] }

// Summary is a one-line account of the result.
func (r Result) Summary() string {
	return fmt.Sprintf("render %.2fs %.1fMB; broker %d objects, etcd %.0fMiB, apiserver %.0fMiB %.0f%%, %.0f watch events/s; controller %.0fMiB gateway %.0fMiB route-agent %.0fMiB; %d peers; converge p50 %.2fs p99 %.2fs (%d); join %.2fs; DNS p50 %.1fms p99 %.1fms",
		r.RenderSeconds, float64(r.TreeBytes)/1e6, r.BrokerObjects, r.EtcdMiB, r.proc("kube-apiserver").RSSMiB, r.proc("kube-apiserver").CPUPercent,
		r.WatchEventsPerSecond, r.proc("mcnet-controller").RSSMiB, r.proc("mcnet-gateway").RSSMiB, r.proc("mcnet-route-agent").RSSMiB,
		r.WireGuardPeers, r.ConvergeP50, r.ConvergeP99, r.ConvergeSamples, r.JoinSeconds, r.DNSP50Ms, r.DNSP99Ms)
}

// Table renders the results as a Markdown table, one column per fleet size.
func Table(rs []Result) string {
	var b strings.Builder
	b.WriteString("| | ")
	for _, r := range rs {
		fmt.Fprintf(&b, "N = %d | ", r.N)
	}
	b.WriteString("\n|---|")
	for range rs {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	row := func(label string, f func(Result) string) {
		fmt.Fprintf(&b, "| %s | ", label)
		for _, r := range rs {
			b.WriteString(f(r) + " | ")
		}
		b.WriteString("\n")
	}
	procRow := func(label, name string) {
		row(label, func(r Result) string {
			p, ok := r.Processes[name]
			if !ok {
				return "–"
			}
			return fmt.Sprintf("%.0f MiB, %.0f%%", p.RSSMiB, p.CPUPercent)
		})
	}
	row("render (validate + render)", func(r Result) string { return fmt.Sprintf("%.2f s", r.RenderSeconds) })
	row("tree: files, bytes (on disk)", func(r Result) string {
		return fmt.Sprintf("%d, %.1f MB (%.1f MB)", r.TreeFiles, float64(r.TreeBytes)/1e6, float64(r.TreeDiskBytes)/1e6)
	})
	row("broker objects (namespace)", func(r Result) string { return fmt.Sprint(r.BrokerObjects) })
	row("objects in etcd (all)", func(r Result) string {
		if r.StoreObjects == 0 {
			return "–"
		}
		return fmt.Sprint(r.StoreObjects)
	})
	row("etcd size", func(r Result) string { return fmt.Sprintf("%.0f MiB", r.EtcdMiB) })
	procRow("kube-apiserver RSS, CPU", "kube-apiserver")
	procRow("etcd RSS, CPU", "etcd")
	row("watch events/s (API server)", func(r Result) string { return fmt.Sprintf("%.0f", r.WatchEventsPerSecond) })
	procRow("mcnet-controller RSS, CPU", "mcnet-controller")
	procRow("mcnet-gateway RSS, CPU (userspace WireGuard inside)", "mcnet-gateway")
	procRow("mcnet-route-agent RSS, CPU (worker)", "mcnet-route-agent")
	procRow("mcnet-route-agent RSS, CPU (gateway node, idle)", "mcnet-route-agent(gateway node)")
	row("WireGuard peers on the gateway", func(r Result) string { return fmt.Sprint(r.WireGuardPeers) })
	row("routes to members on the worker", func(r Result) string { return fmt.Sprint(r.WorkerRoutes) })
	row("new members publish (8 writers)", func(r Result) string { return fmt.Sprintf("%.1f s", r.PublishSeconds) })
	row("… until all are WireGuard peers", func(r Result) string { return fmt.Sprintf("%.1f s", r.BulkConvergeSeconds) })
	row("join: last write → peer + routes on both nodes", func(r Result) string { return fmt.Sprintf("%.2f s", r.JoinSeconds) })
	row("Endpoint change → peer in kernel p50 / p99", func(r Result) string {
		s := fmt.Sprintf("%.2f / %.2f s (%d)", r.ConvergeP50, r.ConvergeP99, r.ConvergeSamples)
		if r.ConvergeFailures > 0 {
			s += fmt.Sprintf(", %d over 30 s", r.ConvergeFailures)
		}
		return s
	})
	row("DNS A, import with N−1 exporters p50 / p99", func(r Result) string { return fmt.Sprintf("%.1f / %.1f ms", r.DNSP50Ms, r.DNSP99Ms) })
	row("EndpointSlices in the importing namespace", func(r Result) string { return fmt.Sprint(r.ImportedSlices) })
	row("churn updates (failed) during the run", func(r Result) string { return fmt.Sprintf("%d (%d)", r.ChurnUpdates, r.ChurnFailures) })
	return b.String()
}

// series is one line of the plot.
type series struct {
	name  string
	color color.RGBA
	value func(Result) float64
}

// Plot draws memory (MiB) and times (s) against N, both axes logarithmic, as a PNG.
func Plot(w io.Writer, rs []Result) error {
	const W, H = 1000, 460
	img := image.NewRGBA(image.Rect(0, 0, W, H))
	fill(img, img.Bounds(), color.RGBA{255, 255, 255, 255})
	mem := []series{
		{"kube-apiserver", color.RGBA{200, 30, 30, 255}, func(r Result) float64 { return r.proc("kube-apiserver").RSSMiB }},
		{"etcd", color.RGBA{230, 140, 0, 255}, func(r Result) float64 { return r.proc("etcd").RSSMiB }},
		{"controller", color.RGBA{30, 90, 200, 255}, func(r Result) float64 { return r.proc("mcnet-controller").RSSMiB }},
		{"gateway", color.RGBA{20, 150, 60, 255}, func(r Result) float64 { return r.proc("mcnet-gateway").RSSMiB }},
		{"route agent", color.RGBA{130, 50, 170, 255}, func(r Result) float64 { return r.proc("mcnet-route-agent").RSSMiB }},
	}
	times := []series{
		{"converge p50", color.RGBA{30, 90, 200, 255}, func(r Result) float64 { return r.ConvergeP50 }},
		{"converge p99", color.RGBA{200, 30, 30, 255}, func(r Result) float64 { return r.ConvergeP99 }},
		{"join", color.RGBA{20, 150, 60, 255}, func(r Result) float64 { return r.JoinSeconds }},
		{"render", color.RGBA{130, 50, 170, 255}, func(r Result) float64 { return r.RenderSeconds }},
	}
	panel(img, image.Rect(60, 40, 480, 400), "RSS (MiB) against N", rs, mem)
	panel(img, image.Rect(560, 40, 980, 400), "seconds against N", rs, times)
	return png.Encode(w, img)
}

func panel(img *image.RGBA, r image.Rectangle, title string, rs []Result, ss []series) {
	text(img, r.Min.X, r.Min.Y-18, title, color.RGBA{0, 0, 0, 255})
	grey := color.RGBA{200, 200, 200, 255}
	black := color.RGBA{0, 0, 0, 255}
	if len(rs) == 0 {
		return
	}
	xmin, xmax := math.Log10(float64(rs[0].N)), math.Log10(float64(rs[len(rs)-1].N))
	if xmax <= xmin {
		xmin, xmax = xmin-0.5, xmin+0.5
	}
	ymin, ymax := math.Inf(1), math.Inf(-1)
	for _, s := range ss {
		for _, res := range rs {
			if v := s.value(res); v > 0 {
				ymin, ymax = math.Min(ymin, math.Log10(v)), math.Max(ymax, math.Log10(v))
			}
		}
	}
	if math.IsInf(ymin, 0) {
		ymin, ymax = 0, 1
	}
	ymin, ymax = math.Floor(ymin), math.Ceil(ymax)
	if ymax == ymin {
		ymax++
	}
	px := func(n float64) int {
		return r.Min.X + int((math.Log10(n)-xmin)/(xmax-xmin)*float64(r.Dx()))
	}
	py := func(v float64) int {
		return r.Max.Y - int((math.Log10(v)-ymin)/(ymax-ymin)*float64(r.Dy()))
	}
	for e := ymin; e <= ymax; e++ {
		y := py(math.Pow(10, e))
		line(img, r.Min.X, y, r.Max.X, y, grey)
		text(img, r.Min.X-50, y+4, trimFloat(math.Pow(10, e)), black)
	}
	for _, res := range rs {
		x := px(float64(res.N))
		line(img, x, r.Min.Y, x, r.Max.Y, grey)
		text(img, x-10, r.Max.Y+16, fmt.Sprint(res.N), black)
	}
	line(img, r.Min.X, r.Max.Y, r.Max.X, r.Max.Y, black)
	line(img, r.Min.X, r.Min.Y, r.Min.X, r.Max.Y, black)
	for i, s := range ss {
		lx, ly := r.Min.X+10+(i%3)*140, r.Max.Y+36+(i/3)*16
		fill(img, image.Rect(lx, ly-8, lx+12, ly), s.color)
		text(img, lx+16, ly, s.name, black)
		prevX, prevY := -1, -1
		for _, res := range rs {
			v := s.value(res)
			if v <= 0 {
				prevX = -1
				continue
			}
			x, y := px(float64(res.N)), py(v)
			fill(img, image.Rect(x-3, y-3, x+4, y+4), s.color)
			if prevX >= 0 {
				line(img, prevX, prevY, x, y, s.color)
			}
			prevX, prevY = x, y
		}
	}
}

func trimFloat(v float64) string {
	if v >= 1 {
		return fmt.Sprintf("%.0f", v)
	}
	return strings.TrimRight(fmt.Sprintf("%.3f", v), "0")
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	r = r.Intersect(img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}

// line draws a two-pixel line (Bresenham).
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	e := dx + dy
	for {
		img.SetRGBA(x0, y0, c)
		img.SetRGBA(x0+1, y0, c)
		img.SetRGBA(x0, y0+1, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v < 0:
		return -1
	case v > 0:
		return 1
	}
	return 0
}

func text(img *image.RGBA, x, y int, s string, c color.RGBA) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

// WriteResults writes results.json, table.md and scale.png into dir.
func WriteResults(dir string, results []Result) error {
	b, err := json.MarshalIndent(results, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "table.md"), []byte(Table(results)), 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "scale.png"))
	if err != nil {
		return err
	}
	if err := Plot(f, results); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
