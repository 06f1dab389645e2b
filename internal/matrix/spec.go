package matrix

import (
	"errors"
	"fmt"
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
	"tx": "A sends as fast as it can; an XDP program on B counts and drops what arrives",
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
	// Baseline is the cell the penalty columns compare with, as
	// "topology/path".
	Baseline string
	// Warmup is how long a cell may take to get its first packet through
	// before it counts as failed.
	Warmup time.Duration
	// PluginDir holds the CNI plugins; "" means internal/cni's default.
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
		Baseline:   "veth/afxdp",
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
func (c *Config) Validate() error {
	var errs []error
	check := func(field string, got, known []string) {
		if len(got) == 0 {
			errs = append(errs, fmt.Errorf("%s: empty", field))
		}
		for _, g := range got {
			if !slices.Contains(known, g) {
				errs = append(errs, fmt.Errorf("%s %q: unknown; choose from %s", field, g, strings.Join(known, ", ")))
			}
		}
	}
	check("Topologies", c.Topologies, Topologies)
	check("Paths", c.Paths, Paths)
	check("Modes", c.Modes, Modes)
	if len(c.Sizes) == 0 {
		errs = append(errs, errors.New("Sizes: empty"))
	}
	for _, s := range c.Sizes {
		if s < MinSize || s > MaxSize {
			errs = append(errs, fmt.Errorf("Sizes %d: a frame must be between %d and %d bytes (MTU 1500) with FCS", s, MinSize, MaxSize))
		}
	}
	if c.Duration < 10*time.Millisecond || c.Duration > 10*time.Minute {
		errs = append(errs, fmt.Errorf("Duration %v: must be between 10ms and 10m", c.Duration))
	}
	if c.Runs < 1 || c.Runs > 100 {
		errs = append(errs, fmt.Errorf("Runs %d: must be between 1 and 100", c.Runs))
	}
	if slices.Contains(c.Modes, "rr") && (c.Rate < 1 || c.Rate > 1_000_000) {
		errs = append(errs, fmt.Errorf("Rate %d: must be between 1 and 1000000 packets per second", c.Rate))
	}
	if slices.Contains(c.Modes, "rr") && c.Rate > 0 && float64(c.Rate)*c.Duration.Seconds() < 10 {
		errs = append(errs, fmt.Errorf("Rate %d with Duration %v: fewer than 10 requests per run", c.Rate, c.Duration))
	}
	if c.Warmup <= 0 {
		errs = append(errs, fmt.Errorf("Warmup %v: must be positive", c.Warmup))
	}
	if c.Baseline != "" {
		bt, bp, ok := strings.Cut(c.Baseline, "/")
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("Baseline %q: must be topology/path, such as veth/afxdp", c.Baseline))
		case !slices.Contains(c.Topologies, bt):
			errs = append(errs, fmt.Errorf("Baseline %q: topology %q is not among those measured (%s)", c.Baseline, bt, strings.Join(c.Topologies, ",")))
		case !slices.Contains(c.Paths, bp):
			errs = append(errs, fmt.Errorf("Baseline %q: path %q is not among those measured (%s)", c.Baseline, bp, strings.Join(c.Paths, ",")))
		}
	}
	return errors.Join(errs...)
}

// payloadLen is the UDP payload of a frame of size bytes (with FCS).
func payloadLen(size int) int { return size - 4 - 42 }

// frameLen is the frame length without FCS.
func frameLen(size int) int { return size - 4 }
