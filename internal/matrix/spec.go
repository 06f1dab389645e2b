package matrix

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Topologies the matrix knows, in the order it reports them.
var Topologies = []string{"veth", "ptp", "bridge", "macvlan", "ipvlan-l2", "ipvlan-l3", "vxlan"}

// Paths are the ways a program moves packets.
var Paths = []string{"udp", "afpacket", "afxdp"}

// Modes are what is measured.
var Modes = []string{"rx", "tx", "rr"}

// topologyDoc says in one line how each topology is built.
var topologyDoc = map[string]string{
	"veth":      "one veth pair straight between the two namespaces (netenv)",
	"ptp":       "CNI ptp: a veth pair per container to a host namespace that routes between them",
	"bridge":    "CNI bridge: a veth pair per container, host ends on a Linux bridge",
	"macvlan":   "CNI macvlan, bridge mode, on a veth uplink in the host namespace",
	"ipvlan-l2": "CNI ipvlan, L2 mode, on a veth uplink in the host namespace",
	"ipvlan-l3": "CNI ipvlan, L3 mode, on a veth uplink in the host namespace",
	"vxlan":     "a VXLAN device (VNI 42, port 4789) in each namespace across a veth underlay",
}

// pathDoc says what each path is.
var pathDoc = map[string]string{
	"udp":      "kernel UDP sockets, recvmmsg/sendmmsg 64 at a time",
	"afpacket": "AF_PACKET: TPACKET_V3 RX ring, TPACKET_V2 TX ring; plain recvfrom/sendto for rr",
	"afxdp":    "AF_XDP socket (this library), XDP program native where the device has it, else generic",
}

// modeDoc says what each mode measures.
var modeDoc = map[string]string{
	"rx": "B receives as fast as it can what a generator sends it across the topology",
	"tx": "A sends as fast as it can; an XDP program on B counts and drops the sender's frames that arrive",
	"rr": "A sends requests at a fixed rate to an echo in B; round-trip times from timestamps in the payload",
}

// Config says what to measure. The zero value is not valid; start from
// [DefaultConfig] or [QuickConfig].
type Config struct {
	Topologies []string
	Paths      []string
	Modes      []string
	// Sizes are Ethernet frame sizes in bytes with the 4-byte FCS, as
	// RFC 2544 counts them: 64 is a 60-byte frame carrying 18 bytes of UDP
	// payload; 1518 the largest a 1500-byte MTU allows.
	Sizes []int
	// Duration of one measurement.
	Duration time.Duration
	// Runs is how many times each cell is measured; runs alternate the
	// order of topologies and of paths.
	Runs int
	// Rate is the request rate of rr, in packets per second.
	Rate int
	// Baseline is the topology the penalty columns compare with: each
	// cell is compared with the cell of the same path, mode and size on
	// it (bridge/udp/rx/64 with veth/udp/rx/64), so that a penalty is what
	// the topology costs that path. Default "veth".
	Baseline string
	// Warmup is how long a cell may take to get its first packet through
	// before it counts as failed.
	Warmup time.Duration
	// PluginDir holds the CNI plugins; "" means internal/cni's default,
	// where missing plugins make their topologies unavailable. A
	// directory given here must hold the plugins the topologies need.
	PluginDir string
}

// DefaultConfig is the full run: every topology, path and mode, 64 and
// 1500-byte frames, three runs of a second each.
func DefaultConfig() Config {
	return Config{
		Topologies: slices.Clone(Topologies),
		Paths:      slices.Clone(Paths),
		Modes:      slices.Clone(Modes),
		Sizes:      []int{64, 1500},
		Duration:   time.Second,
		Runs:       3,
		Rate:       10000,
		Baseline:   "veth",
		Warmup:     3 * time.Second,
	}
}

// QuickConfig is the CI run: every cell once, 64-byte frames, 150 ms.
func QuickConfig() Config {
	c := DefaultConfig()
	c.Sizes = []int{64}
	c.Duration = 150 * time.Millisecond
	c.Runs = 1
	return c
}

// MaxSize is the largest frame size: a 1500-byte MTU plus Ethernet header
// and FCS.
const MaxSize = 1518

// MinSize is the smallest Ethernet frame with FCS.
const MinSize = 64

// ParseList splits a comma-separated flag value and checks each name
// against known; "all" means every known name.
func ParseList(flag, v string, known []string) ([]string, error) {
	if strings.TrimSpace(v) == "all" {
		return slices.Clone(known), nil
	}
	var out []string
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(known, s) {
			return nil, fmt.Errorf("-%s %q: unknown; choose from %s (or all)", flag, s, strings.Join(known, ", "))
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-%s: empty; choose from %s (or all)", flag, strings.Join(known, ", "))
	}
	return out, nil
}

// Validate checks c before anything is built, naming the field at fault.
func (c *Config) Validate() error { return c.ValidateNamed(nil) }

// ValidateNamed is Validate with each field named by name(field), such as
// name("Duration"), where the errors name it: a command names its flags
// ("-duration 0s: must be between 10ms and 10m", not "Duration 0s"). A
// nil name, or one that returns "", keeps the field's name.
func (c *Config) ValidateNamed(name func(field string) string) error {
	n := func(field string) string {
		if name != nil {
			if s := name(field); s != "" {
				return s
			}
		}
		return field
	}
	var errs []error
	check := func(field string, got, known []string) {
		if len(got) == 0 {
			errs = append(errs, fmt.Errorf("%s: empty", n(field)))
		}
		for i, g := range got {
			if !slices.Contains(known, g) {
				errs = append(errs, fmt.Errorf("%s %q: unknown; choose from %s", n(field), g, strings.Join(known, ", ")))
			}
			if slices.Contains(got[:i], g) {
				errs = append(errs, fmt.Errorf("%s %q: given twice", n(field), g))
			}
		}
	}
	check("Topologies", c.Topologies, Topologies)
	check("Paths", c.Paths, Paths)
	check("Modes", c.Modes, Modes)
	if len(c.Sizes) == 0 {
		errs = append(errs, fmt.Errorf("%s: empty", n("Sizes")))
	}
	for i, s := range c.Sizes {
		if s < MinSize || s > MaxSize {
			errs = append(errs, fmt.Errorf("%s %d: a frame must be between %d and %d bytes (MTU 1500) with FCS", n("Sizes"), s, MinSize, MaxSize))
		}
		if slices.Contains(c.Sizes[:i], s) {
			errs = append(errs, fmt.Errorf("%s %d: given twice; a cell is measured once per size", n("Sizes"), s))
		}
	}
	if c.Duration < 10*time.Millisecond || c.Duration > 10*time.Minute {
		errs = append(errs, fmt.Errorf("%s %v: must be between 10ms and 10m", n("Duration"), c.Duration))
	}
	if c.Runs < 1 || c.Runs > 100 {
		errs = append(errs, fmt.Errorf("%s %d: must be between 1 and 100", n("Runs"), c.Runs))
	}
	if slices.Contains(c.Modes, "rr") && (c.Rate < 1 || c.Rate > 1_000_000) {
		errs = append(errs, fmt.Errorf("%s %d: must be between 1 and 1000000 packets per second", n("Rate"), c.Rate))
	}
	if slices.Contains(c.Modes, "rr") && c.Rate > 0 && float64(c.Rate)*c.Duration.Seconds() < 10 {
		errs = append(errs, fmt.Errorf("%s %d with %s %v: fewer than 10 requests per run", n("Rate"), c.Rate, n("Duration"), c.Duration))
	}
	if c.Warmup <= 0 {
		errs = append(errs, fmt.Errorf("%s %v: must be positive", n("Warmup"), c.Warmup))
	}
	if err := CheckBaseline(c.Baseline, c.Topologies); err != nil {
		errs = append(errs, fmt.Errorf("%s %w", n("Baseline"), err))
	}
	if c.PluginDir != "" {
		if err := CheckPluginDir(c.PluginDir, c.Topologies); err != nil {
			errs = append(errs, fmt.Errorf("%s %w", n("PluginDir"), err))
		}
	}
	return errors.Join(errs...)
}

// CheckBaseline checks that b names one of the measured topologies ("" is
// no baseline, which Config allows). The error starts with b quoted, for
// the caller to put the field's or flag's name before it.
func CheckBaseline(b string, topologies []string) error {
	switch {
	case b == "":
		return nil
	case strings.Contains(b, "/"):
		return fmt.Errorf("%q: must be a topology, such as veth: each cell is compared with the same path on it", b)
	case !slices.Contains(topologies, b):
		return fmt.Errorf("%q: not among the topologies measured (%s)", b, strings.Join(topologies, ","))
	}
	return nil
}

// pluginsFor are the CNI plugins each topology runs.
var pluginsFor = map[string][]string{
	"ptp":       {"ptp", "host-local"},
	"bridge":    {"bridge", "host-local"},
	"macvlan":   {"macvlan", "host-local"},
	"ipvlan-l2": {"ipvlan", "host-local"},
	"ipvlan-l3": {"ipvlan", "host-local"},
}

// CheckPluginDir checks that dir is a directory holding, as executables,
// the CNI plugins that topologies need; it checks nothing when none of
// them uses CNI. The error starts with dir quoted, for the caller to put
// the field's or flag's name before it.
func CheckPluginDir(dir string, topologies []string) error {
	var need []string
	for _, t := range topologies {
		for _, p := range pluginsFor[t] {
			if !slices.Contains(need, p) {
				need = append(need, p)
			}
		}
	}
	if len(need) == 0 {
		return nil
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%q: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%q: not a directory", dir)
	}
	var missing []string
	for _, p := range need {
		fi, err := os.Stat(filepath.Join(dir, p))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%q: no executable CNI plugin %s in it (the topologies asked for need %s)",
			dir, strings.Join(missing, ", "), strings.Join(need, ", "))
	}
	return nil
}

// payloadLen is the UDP payload of a frame of size bytes (with FCS).
func payloadLen(size int) int { return size - 4 - 42 }

// frameLen is the frame length without FCS.
func frameLen(size int) int { return size - 4 }
