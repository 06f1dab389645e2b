package rawtp

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/afxdp/afxdp/internal/testenv"
)

// kernelSpec returns the running kernel's BTF, skipping t without it
// unless the environment requires the kernel tests to run.
func kernelSpec(t *testing.T) *btf.Spec {
	t.Helper()
	spec, err := Kernel()
	if err != nil {
		if os.Getenv(testenv.RequireEnv) == "1" {
			t.Fatalf("%v, and %s=1 forbids skipping", err, testenv.RequireEnv)
		}
		t.Skip(err)
	}
	return spec
}

// TestKernelOffsets finds, in this kernel's BTF, the arguments that
// internal/pktgen and bench read, where TP_PROTO puts them.
func TestKernelOffsets(t *testing.T) {
	kernelSpec(t)
	for _, tc := range []struct {
		tp   string
		args []Arg
		want []int16
	}{
		// dev, xdp, tgt, err, map_type, map_id, index
		{"xdp:xdp_redirect_err", []Arg{Int32("map_id"), Int32("err"), Int32("map_type"), Int32("index")}, []int16{40, 24, 32, 48}},
		// from_dev, to_dev, sent, drops, err
		{"xdp:xdp_devmap_xmit", []Arg{PointerTo("from_dev", "net_device"), Int32("drops"), Int32("err"), PointerTo("to_dev", "net_device")}, []int16{0, 24, 32, 8}},
		// map_id, processed, drops, to_cpu
		{"xdp:xdp_cpumap_enqueue", []Arg{Int32("map_id"), Int32("drops"), Int32("processed"), Int32("to_cpu")}, []int16{0, 16, 8, 24}},
	} {
		got, err := KernelOffsets(tc.tp, tc.args...)
		if err != nil {
			t.Errorf("KernelOffsets(%s): %v", tc.tp, err)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("KernelOffsets(%s) = %v, want %v", tc.tp, got, tc.want)
		}
	}
}

// TestKernelOffsetsMissing checks that what the kernel lacks is named.
func TestKernelOffsetsMissing(t *testing.T) {
	kernelSpec(t)
	for _, tc := range []struct {
		tp   string
		args []Arg
		want string
	}{
		{"xdp:xdp_no_such_event", []Arg{Int32("err")}, "xdp:xdp_no_such_event: no function __traceiter_xdp_no_such_event in the kernel's BTF: "},
		{"xdp:xdp_devmap_xmit", []Arg{Int32("err"), PointerTo("from_ifindex", "net_device")}, `xdp:xdp_devmap_xmit: no argument "from_ifindex" in the kernel's BTF (__traceiter_xdp_devmap_xmit)`},
		{"xdp:xdp_devmap_xmit", []Arg{Int32("from_dev")}, `xdp:xdp_devmap_xmit: argument "from_dev" (__traceiter_xdp_devmap_xmit): is a pointer to struct net_device, want a 4-byte integer`},
		{"xdp:xdp_redirect_err", []Arg{PointerTo("err", "net_device")}, `xdp:xdp_redirect_err: argument "err" (__traceiter_xdp_redirect_err): is int (4 bytes), want a pointer to struct net_device`},
		{"xdp:xdp_redirect_err", []Arg{PointerTo("xdp", "net_device")}, `xdp:xdp_redirect_err: argument "xdp" (__traceiter_xdp_redirect_err): is a pointer to struct bpf_prog, want a pointer to struct net_device`},
		{"xdp_redirect_err", nil, `tracepoint "xdp_redirect_err": want group:name`},
	} {
		_, err := KernelOffsets(tc.tp, tc.args...)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("KernelOffsets(%s, %v) = %v, want an error starting %q", tc.tp, tc.args, err, tc.want)
		}
	}
}

// TestKernelNetDeviceIfindex finds the member that internal/pktgen reads
// through xdp:xdp_devmap_xmit's from_dev.
func TestKernelNetDeviceIfindex(t *testing.T) {
	spec := kernelSpec(t)
	off, err := Int32Member(spec, "net_device", "ifindex")
	if err != nil {
		t.Fatal(err)
	}
	var nd *btf.Struct
	if err := spec.TypeByName("net_device", &nd); err != nil {
		t.Fatal(err)
	}
	if off <= 0 || off+4 > int32(nd.Size) {
		t.Errorf("net_device.ifindex at byte %d, outside the struct's %d bytes", off, nd.Size)
	}
	t.Logf("net_device.ifindex at byte %d", off)
	if _, err := Int32Member(spec, "net_device", "no_such_member"); !errors.Is(err, btf.ErrNotFound) {
		t.Errorf("Int32Member(net_device, no_such_member) = %v, want ErrNotFound", err)
	}
}

// testSpec is a stand-in for a kernel's BTF:
//
//	void __traceiter_ev(void *__data, const struct dev *d, int a, u64 wide, enum e e, u32 b);
//	void __traceiter_nodata(int a);
//	struct dev { int x; union { struct { u32 y; }; long z; }; unsigned flag: 4; char c; };
func testSpec(t *testing.T) *btf.Spec {
	t.Helper()
	i32 := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	u32 := &btf.Typedef{Name: "u32", Type: &btf.Int{Name: "unsigned int", Size: 4}}
	u64 := &btf.Int{Name: "unsigned long long", Size: 8}
	long := &btf.Int{Name: "long", Size: 8, Encoding: btf.Signed}
	char := &btf.Int{Name: "char", Size: 1}
	inner := &btf.Struct{Size: 4, Members: []btf.Member{{Name: "y", Type: u32}}}
	union := &btf.Union{Size: 8, Members: []btf.Member{{Type: inner}, {Name: "z", Type: long}}}
	dev := &btf.Struct{Name: "dev", Size: 24, Members: []btf.Member{
		{Name: "x", Type: i32},
		{Type: union, Offset: 64},
		{Name: "flag", Type: &btf.Int{Name: "unsigned int", Size: 4}, Offset: 128, BitfieldSize: 4},
		{Name: "c", Type: char, Offset: 160},
	}}
	enum := &btf.Enum{Name: "e", Size: 4, Values: []btf.EnumValue{{Name: "E0"}}}
	voidp := &btf.Pointer{Target: &btf.Void{}}
	ev := &btf.Func{Name: "__traceiter_ev", Linkage: btf.GlobalFunc, Type: &btf.FuncProto{Return: i32, Params: []btf.FuncParam{
		{Name: "__data", Type: voidp},
		{Name: "d", Type: &btf.Pointer{Target: &btf.Const{Type: dev}}},
		{Name: "a", Type: i32},
		{Name: "wide", Type: u64},
		{Name: "e", Type: enum},
		{Name: "b", Type: u32},
	}}}
	nodata := &btf.Func{Name: "__traceiter_nodata", Linkage: btf.GlobalFunc, Type: &btf.FuncProto{Return: i32, Params: []btf.FuncParam{
		{Name: "a", Type: i32},
	}}}
	b, err := btf.NewBuilder([]btf.Type{ev, nodata}, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := b.Spec()
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func TestOffsets(t *testing.T) {
	spec := testSpec(t)
	got, err := Offsets(spec, "g:ev", Int32("b"), PointerTo("d", "dev"), Int32("e"), Int32("a"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []int16{32, 0, 24, 8}; !slices.Equal(got, want) {
		t.Errorf("Offsets = %v, want %v", got, want)
	}
	if got, err := Offsets(spec, "g:ev"); err != nil || len(got) != 0 {
		t.Errorf("Offsets of nothing = %v, %v, want none", got, err)
	}
}

func TestOffsetsErrors(t *testing.T) {
	spec := testSpec(t)
	for _, tc := range []struct {
		tp       string
		args     []Arg
		want     string
		notFound bool
	}{
		{"g:missing", []Arg{Int32("a")}, "g:missing: no function __traceiter_missing in the kernel's BTF: ", true},
		{"g:ev", []Arg{Int32("a"), Int32("nope")}, `g:ev: no argument "nope" in the kernel's BTF (__traceiter_ev): `, true},
		{"g:ev", []Arg{Int32("__data")}, `g:ev: no argument "__data" in the kernel's BTF (__traceiter_ev): `, true},
		{"g:ev", []Arg{Int32("wide")}, `g:ev: argument "wide" (__traceiter_ev): is unsigned long long (8 bytes), want a 4-byte integer`, false},
		{"g:ev", []Arg{Int32("d")}, `g:ev: argument "d" (__traceiter_ev): is a pointer to struct dev, want a 4-byte integer`, false},
		{"g:ev", []Arg{PointerTo("d", "other")}, `g:ev: argument "d" (__traceiter_ev): is a pointer to struct dev, want a pointer to struct other`, false},
		{"g:ev", []Arg{PointerTo("a", "dev")}, `g:ev: argument "a" (__traceiter_ev): is int (4 bytes), want a pointer to struct dev`, false},
		{"g:nodata", []Arg{Int32("a")}, "g:nodata: __traceiter_nodata in the kernel's BTF does not start with __data", false},
		{"ev", []Arg{Int32("a")}, `tracepoint "ev": want group:name`, false},
		{"g:", []Arg{Int32("a")}, `tracepoint "g:": want group:name`, false},
	} {
		_, err := Offsets(spec, tc.tp, tc.args...)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("Offsets(%s, %v) = %v, want an error starting %q", tc.tp, tc.args, err, tc.want)
			continue
		}
		if errors.Is(err, btf.ErrNotFound) != tc.notFound {
			t.Errorf("Offsets(%s, %v) = %v: errors.Is(ErrNotFound) = %v, want %v", tc.tp, tc.args, err, !tc.notFound, tc.notFound)
		}
	}
}

func TestInt32Member(t *testing.T) {
	spec := testSpec(t)
	for _, tc := range []struct {
		member string
		want   int32
		err    string
	}{
		{"x", 0, ""},
		{"y", 8, ""}, // in an anonymous struct in an anonymous union
		{"z", 0, `struct dev: member "z": is long (8 bytes), want a 4-byte integer`},
		{"flag", 0, `struct dev: member "flag" is a bitfield`},
		{"c", 0, `struct dev: member "c": is char (1 bytes), want a 4-byte integer`},
		{"nope", 0, `struct dev: no member "nope" in the kernel's BTF: `},
	} {
		got, err := Int32Member(spec, "dev", tc.member)
		if tc.err == "" {
			if err != nil || got != tc.want {
				t.Errorf("Int32Member(dev, %s) = %d, %v, want %d", tc.member, got, err, tc.want)
			}
			continue
		}
		if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
			t.Errorf("Int32Member(dev, %s) = %d, %v, want an error starting %q", tc.member, got, err, tc.err)
		}
	}
	if _, err := Int32Member(spec, "missing", "x"); err == nil || !errors.Is(err, btf.ErrNotFound) {
		t.Errorf("Int32Member(missing, x) = %v, want ErrNotFound", err)
	}
}
